//! Short text on the stack for the encoder: addresses and whole numbers
//! written without `fmt` (IPv4 by hand; IPv6, which is rare, through
//! `Display`).

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

/// An address as text on the stack: IPv4 written by hand, IPv6 through
/// `Display` (rare).
pub(crate) struct Text {
    buf: [u8; 64],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl Text {
    pub(crate) fn ip(ip: IpAddr) -> Self {
        let mut t = Self::default();
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b".");
                    }
                    t.push_uint(u64::from(octet));
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(t, "{v6}");
            }
        }
        t
    }

    pub(crate) fn socket(addr: SocketAddr) -> Self {
        let mut t = Self::default();
        match addr {
            SocketAddr::V4(a) => {
                t = Self::ip(IpAddr::V4(*a.ip()));
                t.push(b":");
                t.push_uint(u64::from(a.port()));
            }
            SocketAddr::V6(a) => {
                let _ = write!(t, "{a}");
            }
        }
        t
    }

    fn push(&mut self, b: &[u8]) {
        let end = (self.len + b.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&b[..end - self.len]);
        self.len = end;
    }

    pub(crate) fn push_uint(&mut self, v: u64) {
        self.push(itoa::Buffer::new().format(v).as_bytes());
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        for a in [
            "10.0.0.1:8080",
            "255.255.255.255:65535",
            "0.0.0.0:0",
            "[::1]:443",
            "[2001:db8::7]:80",
        ] {
            let addr: SocketAddr = a.parse().expect("address");
            assert_eq!(Text::socket(addr).as_str(), addr.to_string());
            assert_eq!(Text::ip(addr.ip()).as_str(), addr.ip().to_string());
        }
        let mut t = Text::default();
        t.push_uint(u64::MAX);
        assert_eq!(t.as_str(), u64::MAX.to_string());
    }
}
