//! Reading an adapter's `/metrics` page (Prometheus or OpenMetrics text) and
//! waiting for a series to reach a value.
//!
//! A plain HTTP/1.0 request over a loopback socket is all a test needs, so
//! this brings no HTTP client in.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One scrape: every sample by name and labels.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Fetches and parses `http://{addr}/metrics`.
pub async fn scrape(addr: SocketAddr) -> Result<Metrics> {
    let text = tokio::time::timeout(SCRAPE_TIMEOUT, get_metrics(addr))
        .await
        .map_err(|_| anyhow!("GET http://{addr}/metrics took more than {SCRAPE_TIMEOUT:?}"))??;
    Ok(Metrics::parse(&text))
}

/// Scrapes until `done` holds, for at most `timeout`; the error shows `what`
/// was awaited and the last scrape's value of `series` (a metric name).
pub async fn wait_for_metrics(
    addr: SocketAddr,
    timeout: Duration,
    what: &str,
    series: &str,
    done: impl Fn(&Metrics) -> bool,
) -> Result<Metrics> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = scrape(addr).await?;
        if done(&m) {
            return Ok(m);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not seen within {timeout:?}; last scrape: {}",
                m.show(series)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_metrics(addr: SocketAddr) -> Result<String> {
    let mut conn = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to the metrics server at {addr}"))?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await?;
    let response = String::from_utf8(response).context("metrics page is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response from {addr}"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        bail!("GET http://{addr}/metrics answered {status:?}");
    }
    Ok(body.to_string())
}

// === impl Metrics ===

impl Metrics {
    /// Parses exposition text; lines it cannot read are skipped.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Self { samples }
    }

    /// The value of the sample `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
    }

    /// Every sample of `name`, for failure messages.
    pub fn show(&self, name: &str) -> String {
        let found: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| format!("{}{:?} = {}", s.name, s.labels, s.value))
            .collect();
        if found.is_empty() {
            format!("no {name} series")
        } else {
            found.join(", ")
        }
    }
}

/// Reads `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_text_parses() {
        let m = Metrics::parse(
            "# HELP discovery_watches Open registry watches.\n\
             # TYPE discovery_watches gauge\n\
             discovery_watches 2\n\
             discovery_subscribers{service=\"web\"} 50\n\
             discovery_subscribers{service=\"a\\\"b,c\",zone=\"x\"} 1 1700000000\n\
             discovery_updates_sent_total{kind=\"delta\"} 7\n\
             # EOF\n",
        );
        assert_eq!(m.get("discovery_watches", &[]), Some(2.0));
        assert_eq!(
            m.get("discovery_subscribers", &[("service", "web")]),
            Some(50.0)
        );
        assert_eq!(
            m.get("discovery_subscribers", &[("service", "a\"b,c")]),
            Some(1.0)
        );
        assert_eq!(
            m.get("discovery_updates_sent_total", &[("kind", "delta")]),
            Some(7.0)
        );
        assert_eq!(m.get("discovery_subscribers", &[("service", "nope")]), None);
    }
}
