//! Time stamps, histograms, CPU accounting and process lookup.

use super::*;

pub(crate) static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the process-wide anchor: producer and consumer share this process, so a
/// monotonic clock is enough for end-to-end latency.
pub(crate) fn now_us() -> u64 {
    ANCHOR.get_or_init(Instant::now).elapsed().as_micros() as u64
}

pub(crate) fn body_stamped(sent_us: u64) -> Bytes {
    let mut body = vec![b'p'; BODY_SIZE];
    body[..8].copy_from_slice(&sent_us.to_le_bytes());
    Bytes::from(body)
}

pub(crate) fn stamp_of(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}

pub(crate) fn histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, up to ten minutes (drain-phase ages are backlog ages), 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")
}

pub(crate) fn record_us(h: &mut Histogram<u64>, took: Duration) {
    h.saturating_record((took.as_micros() as u64).max(1));
}

pub(crate) fn record_e2e(h: &mut Histogram<u64>, body: &[u8], errors: &mut Errors) {
    match stamp_of(body) {
        Some(sent) => h.saturating_record(now_us().saturating_sub(sent).max(1)),
        None => errors.add("body without a send stamp"),
    }
}

/// Clock ticks per second of /proc/PID/stat's utime and stime.
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub(crate) fn cpu_seconds(pid: &str, ticks: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3 (state); utime is 14, stime 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .context("short stat")?
            .parse::<f64>()
            .context("stat field")
    };
    Ok((field(11)? + field(12)?) / ticks)
}

/// Busy seconds (everything but idle and iowait) of one CPU so far, from /proc/stat.
pub(crate) fn core_busy_seconds(cpu: Option<usize>, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let label = format!("cpu{}", cpu?);
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label.as_str()))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    Some(busy / ticks)
}

pub(crate) fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The first process named `name` among `root` and its descendants.
pub(crate) fn find_process(root: u32, name: &str) -> Option<u32> {
    if comm(root) == name {
        return Some(root);
    }
    let mut parents = vec![root];
    let mut all: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            all.push((pid, ppid));
        }
    }
    while let Some(parent) = parents.pop() {
        for &(pid, ppid) in &all {
            if ppid == parent {
                if comm(pid) == name {
                    return Some(pid);
                }
                parents.push(pid);
            }
        }
    }
    None
}

/// Counts errors and keeps the first message of each kind for the report.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    pub(crate) count: u64,
    pub(crate) first: Option<String>,
}

impl Errors {
    pub(crate) fn add(&mut self, what: impl std::fmt::Display) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what.to_string());
        }
    }
}
