//! A csync2 node sandbox for the runner and server tests: a temporary
//! `CSYNC2_SYSTEM_DIR` with csync2.cfg (`nossl * *;`, a key from
//! `csync2 -k`, one group whose hosts are loopback IP literals), a
//! database directory and a data directory, all removed on drop.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use csync2_watch::runner::{Csync2, Limits};

/// The csync2 binary under test (`CSYNC2` in the environment, else PATH).
pub fn csync2_program() -> PathBuf {
    std::env::var_os("CSYNC2")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("csync2"))
}

static NEXT: AtomicU32 = AtomicU32::new(1);

/// A pair of loopback addresses nobody else in this process uses: 127.A.B.1
/// and 127.A.B.2, with A from our pid so that concurrent test binaries
/// differ.
pub fn fresh_pair() -> (Ipv4Addr, Ipv4Addr) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let a = 100 + (std::process::id() % 150) as u8;
    let b = (n % 250) as u8 + 1;
    (Ipv4Addr::new(127, a, b, 1), Ipv4Addr::new(127, a, b, 2))
}

/// A TCP port free on both addresses right now.
pub fn free_port(ips: &[Ipv4Addr]) -> u16 {
    'outer: for _ in 0..200 {
        let l = TcpListener::bind((ips[0], 0)).expect("bind an ephemeral port");
        let port = l.local_addr().unwrap().port();
        drop(l);
        for ip in &ips[1..] {
            if TcpListener::bind((*ip, port)).is_err() {
                continue 'outer;
            }
        }
        return port;
    }
    panic!("no free port found");
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub etc: PathBuf,
    pub db: PathBuf,
    pub data: PathBuf,
    pub me: Ipv4Addr,
    pub peer: Ipv4Addr,
    pub port: u16,
}

impl Sandbox {
    /// A node `me` in a group with `peer`; `extra` goes at the top of
    /// csync2.cfg (e.g. `lock-timeout 0;`).
    pub fn new(extra: &str) -> Sandbox {
        let (me, peer) = fresh_pair();
        Self::with(me, peer, free_port(&[me, peer]), extra)
    }

    pub fn with(me: Ipv4Addr, peer: Ipv4Addr, port: u16, extra: &str) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("csync2-watch-runner-")
            .tempdir()
            .expect("tempdir");
        let etc = dir.path().join("etc");
        let db = dir.path().join("db");
        let data = dir.path().join("data");
        for d in [&etc, &db, &data] {
            std::fs::create_dir(d).unwrap();
        }
        let key = etc.join("csync2.key");
        let st = Command::new(csync2_program())
            .arg("-k")
            .arg(&key)
            .status()
            .expect("run csync2 -k");
        assert!(st.success(), "csync2 -k failed");
        let cfg = format!(
            "{extra}\nnossl * *;\ngroup test {{\n  host {me} {peer};\n  key \"{}\";\n  include \"{}\";\n}}\n",
            key.display(),
            data.display()
        );
        std::fs::write(etc.join("csync2.cfg"), cfg).unwrap();
        Sandbox {
            dir,
            etc,
            db,
            data,
            me,
            peer,
            port,
        }
    }

    /// csync2 for this node: `-N me -D db -p port`, our system dir.
    pub fn csync2(&self) -> Csync2 {
        Csync2 {
            program: csync2_program(),
            node: Some(self.me.to_string()),
            cfg_name: None,
            database: Some(self.db.clone().into_os_string()),
            port: Some(self.port),
            client_args: Vec::new(),
            system_dir: Some(self.etc.clone()),
        }
    }

    /// The same configuration seen from the peer (its own database).
    pub fn peer_csync2(&self, db: &Path) -> Csync2 {
        Csync2 {
            node: Some(self.peer.to_string()),
            database: Some(db.as_os_str().to_owned()),
            ..self.csync2()
        }
    }

    /// csync2's SQLite file for this node.
    pub fn db_file(&self) -> PathBuf {
        self.db.join(format!("{}.db3", self.me))
    }
}

pub fn limits(stall: Duration) -> Limits {
    Limits {
        stall_timeout: stall,
    }
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
