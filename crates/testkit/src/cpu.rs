//! CPU seconds of the processes that share the machine, from `/proc/<pid>/stat`, for the
//! benchmarks' per-phase CPU tables.

/// utime + stime of `pid`, plus its reaped children's when `children` (PostgreSQL's
/// postmaster reaps the backends that ended), in seconds.
pub fn seconds(pid: u32, children: bool) -> f64 {
    let f = stat_fields(pid);
    // f[0] is field 3; utime 14, stime 15, cutime 16, cstime 17.
    let at = |field: usize| f.get(field - 3).copied().unwrap_or(0.0);
    let ticks = at(14) + at(15) + if children { at(16) + at(17) } else { 0.0 };
    ticks / hz()
}

/// CPU seconds of the children `pid` has waited for (e.g. a `Command` run to its end).
pub fn reaped_children(pid: u32) -> f64 {
    let f = stat_fields(pid);
    let at = |field: usize| f.get(field - 3).copied().unwrap_or(0.0);
    (at(16) + at(17)) / hz()
}

/// PostgreSQL's CPU seconds: the postmaster, its live backends, and the backends that ended.
pub fn postgres(postmaster: u32) -> f64 {
    seconds(postmaster, true)
        + processes()
            .iter()
            .filter(|(_, ppid, _)| *ppid == postmaster)
            .map(|(pid, _, _)| seconds(*pid, false))
            .sum::<f64>()
}

/// Seconds the hypervisor ran others on this machine's virtual CPUs (`steal` of `/proc/stat`,
/// all CPUs together): how much of a phase's wall time the machine was not ours.
pub fn steal() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // "cpu  user nice system idle iowait irq softirq steal ..."
    let ticks = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    ticks / hz()
}

/// The postmaster's pid, from its pid file (readable when this runs as the server's owner or
/// root; otherwise `None`).
pub async fn postmaster_pid(pool: &sqlx::PgPool) -> Option<u32> {
    let dir: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(pool)
        .await
        .ok()?;
    let file = std::fs::read_to_string(format!("{dir}/postmaster.pid")).ok()?;
    file.lines().next()?.trim().parse().ok()
}

/// (pid, parent pid, command name) of every process.
pub fn processes() -> Vec<(u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_owned();
        let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, ppid, comm))
    })
    .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces), from
/// field 3 (state) on; empty when the process is gone.
fn stat_fields(pid: u32) -> Vec<f64> {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Vec::new();
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Vec::new();
    };
    rest.split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect()
}

fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}
