//! The `discovery-file` adapter's registry for tests: a YAML endpoint file in
//! a temporary directory, always replaced atomically (written beside, then
//! renamed), and a [`RegistryControl`] that edits it.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, sync::Mutex};

use anyhow::Result;

use crate::{
    conformance::{RegistryControl, TestEndpoint},
    temp_file::TempFile,
};

/// An endpoint file in its own temporary directory.
#[derive(Debug)]
pub struct EndpointFile {
    file: TempFile,
}

/// A [`RegistryControl`] over an [`EndpointFile`]: every change rewrites the
/// whole file, as a person or a deployment tool would.
#[derive(Debug)]
pub struct FileControl {
    file: EndpointFile,
    service: String,
    missing: String,
    services: Mutex<BTreeMap<String, Vec<TestEndpoint>>>,
}

// === impl EndpointFile ===

impl EndpointFile {
    /// A new directory holding `endpoints.yaml` with `text`.
    pub fn new(text: &str) -> Result<Self> {
        Ok(Self {
            file: TempFile::new("tributary-endpoints-", "endpoints.yaml", text)?,
        })
    }

    /// The file's path, for `discovery-file --file`.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Replaces the file's content atomically.
    pub fn write(&self, text: &str) -> Result<()> {
        self.file.write(text)
    }
}

/// The YAML text of a file with these services.
pub fn render(services: &BTreeMap<String, Vec<TestEndpoint>>) -> String {
    // Strings are written JSON-quoted, which YAML reads as they are.
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut out = String::from("services:\n");
    for (name, endpoints) in services {
        if endpoints.is_empty() {
            let _ = writeln!(out, "  {}: []", q(name));
            continue;
        }
        let _ = writeln!(out, "  {}:", q(name));
        for e in endpoints {
            let _ = writeln!(out, "    - id: {}", q(&e.id));
            let _ = writeln!(out, "      address: {}", q(&e.address));
            let _ = writeln!(out, "      port: {}", e.port);
            let _ = writeln!(out, "      weight: {}", e.weight);
        }
    }
    out
}

// === impl FileControl ===

impl FileControl {
    /// A file with service `service` holding one seed endpoint and a second
    /// service `other`; `missing` is never written.
    pub fn new(service: &str, missing: &str) -> Result<Self> {
        let services = BTreeMap::from([
            (service.to_string(), vec![TestEndpoint::new(9001, 1)]),
            ("other".to_string(), vec![TestEndpoint::new(9002, 3)]),
        ]);
        let file = EndpointFile::new(&render(&services))?;
        Ok(Self {
            file,
            service: service.to_string(),
            missing: missing.to_string(),
            services: Mutex::new(services),
        })
    }

    /// The endpoint file.
    pub fn file(&self) -> &EndpointFile {
        &self.file
    }

    fn edit(&self, f: impl FnOnce(&mut Vec<TestEndpoint>)) -> Result<()> {
        let mut services = self.services.lock().expect("services lock poisoned");
        f(services.entry(self.service.clone()).or_default());
        self.file.write(&render(&services))
    }
}

impl RegistryControl for FileControl {
    fn service(&self) -> &str {
        &self.service
    }

    fn missing_service(&self) -> &str {
        &self.missing
    }

    async fn add(&self, endpoint: &TestEndpoint) -> Result<()> {
        self.edit(|eps| eps.push(endpoint.clone()))
    }

    async fn change(&self, endpoint: &TestEndpoint) -> Result<()> {
        self.edit(|eps| {
            for e in eps.iter_mut().filter(|e| e.id == endpoint.id) {
                *e = endpoint.clone();
            }
        })
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.edit(|eps| eps.retain(|e| e.id != id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_files_quote_strings() {
        let services = BTreeMap::from([
            ("web".to_string(), vec![TestEndpoint::new(80, 2)]),
            ("empty".to_string(), vec![]),
        ]);
        assert_eq!(
            render(&services),
            "services:\n  \"empty\": []\n  \"web\":\n    - id: \"127.0.0.1:80\"\n      \
             address: \"127.0.0.1\"\n      port: 80\n      weight: 2\n"
        );
    }
}
