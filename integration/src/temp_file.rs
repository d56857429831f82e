//! A file in its own temporary directory, always replaced atomically
//! (written beside, then renamed), so that a process watching it never reads
//! half a file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A file in a temporary directory that is removed on drop.
#[derive(Debug)]
pub(crate) struct TempFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempFile {
    /// A new directory named `prefix…` holding `name` with `text`.
    pub(crate) fn new(prefix: &str, name: &str, text: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("cannot create a temporary directory")?;
        let path = dir.path().join(name);
        let file = Self { dir, path };
        file.write(text)?;
        Ok(file)
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's content atomically.
    pub(crate) fn write(&self, text: &str) -> Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.path())
            .with_context(|| format!("cannot create a file beside {}", self.path.display()))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())?;
        tmp.persist(&self.path)
            .with_context(|| format!("cannot rename onto {}", self.path.display()))?;
        Ok(())
    }
}
