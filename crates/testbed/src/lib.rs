//! Real csync2 clusters of N nodes on this one machine, for the demo
//! (`cargo run --release -p csync2-watch-demo`), csync2-watch's
//! integration tests and its benchmarks. A crate of its own, a
//! dev-dependency of csync2-watch: the daemon's binary carries none of this
//! namespace and mount code.
//!
//! Each node has its own network namespace (`eth0` with `10.231.0.<i>/24`,
//! a veth to a bridge that lives in a namespace of its own, so nothing
//! touches the host's network), its own UTS namespace (hostname `node<i>`)
//! and its own persistent mount namespace, in which the node's data
//! directory is bind-mounted over the common data path (the same absolute
//! path on every node, as in production, so all nodes share one
//! csync2.cfg), a hosts file naming every node over `/etc/hosts`, and its
//! csync2 database directory over `/var/lib/csync2`. Processes run on a
//! node by entering its namespaces between `fork` and `exec`.
//!
//! A testbed lives under `<base>/<id>/` (base `/run/csync2-watch-testbed`
//! or `$CSYNC2_WATCH_TESTBED_DIR`), with its owner's PID and start time in
//! `owner`; its data path is `/srv/csw-<id>/data` and its network
//! namespaces are `csw-<id>-n<i>` and `csw-<id>-br`. Dropping it ends its
//! processes, unmounts, deletes the namespaces and removes the directories;
//! [`sweep_stale`] does the same for testbeds whose owner died, and runs
//! whenever a testbed starts.

mod cleanup;
mod ns;
mod process;
mod tree;
mod watched;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use cleanup::{base_dir, sweep_stale};
pub use process::{ProcessHandle, KILL_GRACE};
pub use tree::{
    diff_trees, diff_trees_with, escape_bytes, tree_snapshot, DiffOptions, Entry, EntryKind,
    Snapshot, INLINE_CONTENT,
};
pub use watched::{WatchedCluster, QUICK_SETTINGS};

use cleanup::{data_root, global_lock, netns_name, sweep_locked, NETNS_DIR};
use ns::NodeNs;
use process::Registry;

/// csync2's TCP port (the testbed's servers use the default).
pub const CSYNC2_PORT: u16 = 30865;
/// Environment variable that moves the testbeds' base directory.
pub const BASE_DIR_ENV: &str = "CSYNC2_WATCH_TESTBED_DIR";
/// Default base directory of all testbeds.
pub const DEFAULT_BASE_DIR: &str = "/run/csync2-watch-testbed";
/// Most nodes in one testbed (10.231.0.1 to .250).
pub const MAX_NODES: usize = 250;
/// The group key's file name, relative to each node's `CSYNC2_SYSTEM_DIR`.
pub const KEY_FILE: &str = "csync2.key";
/// The name of the group in the default configuration.
pub const GROUP: &str = "testbed";
/// csync2's database directory inside every node (the node's own
/// [`Node::db_dir`] is mounted there).
pub const NODE_DB_MOUNT: &str = "/var/lib/csync2";
/// How long [`Node::start_csync2_server`] waits for the server to listen.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("a csync2 testbed needs root (network and mount namespaces); run the tests as root")]
    NotRoot,
    #[error("a testbed has 1 to {MAX_NODES} nodes, not {0}")]
    NodeCount(usize),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Command {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: not done after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("the nodes still differ after {after:?}:\n{}", .differences.join("\n"))]
    Differ {
        after: Duration,
        differences: Vec<String>,
    },
    #[error("{}: must be relative to the data path, without `..`", .0.display())]
    OutsideData(PathBuf),
    #[error("tearing the testbed down left: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}

/// Run `cmd` to completion; fail with its stderr unless it exits 0.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<Output, TestbedError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("starting {what}")))?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            what: what.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// Poll `f` (quickly at first, then every 50 ms) until it returns true or
/// `timeout` passes; returns its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return f();
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// Number of nodes, 1 to [`MAX_NODES`]. Default 3.
    pub nodes: usize,
    /// Lines added inside the group of the default csync2.cfg (after its
    /// `host`, `key` and `include` lines), e.g. `"exclude *.tmp;"`.
    pub extra_config: String,
    /// Files (paths relative to the data path) written identically on every
    /// node, with the same mtime, before the csync2 databases are seeded.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// The csync2 binary. Default `/usr/sbin/csync2` when it exists, else
    /// `csync2` from PATH.
    pub csync2: PathBuf,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        let sbin = Path::new("/usr/sbin/csync2");
        TestbedOptions {
            nodes: 3,
            extra_config: String::new(),
            files: Vec::new(),
            csync2: if sbin.exists() {
                sbin.to_path_buf()
            } else {
                PathBuf::from("csync2")
            },
        }
    }
}

impl TestbedOptions {
    /// Default options with `n` nodes.
    pub fn nodes(n: usize) -> Self {
        TestbedOptions {
            nodes: n,
            ..Default::default()
        }
    }
}

/// A running testbed. Dropping it tears everything down.
pub struct Testbed {
    id: String,
    base: PathBuf,
    run_dir: PathBuf,
    data_path: PathBuf,
    csync2: PathBuf,
    nodes: Vec<Node>,
    config: Mutex<String>,
    registry: Arc<Registry>,
    torn_down: bool,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("id", &self.id)
            .field("nodes", &self.nodes.len())
            .field("data_path", &self.data_path)
            .finish()
    }
}

impl Testbed {
    /// Build the testbed: namespaces, network, mounts, per-node csync2
    /// configuration, key and seeded databases. The csync2 servers are not
    /// started (see [`start_servers`](Self::start_servers)). Sweeps stale
    /// testbeds first.
    pub fn start(opts: TestbedOptions) -> Result<Testbed, TestbedError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(TestbedError::NotRoot);
        }
        if opts.nodes == 0 || opts.nodes > MAX_NODES {
            return Err(TestbedError::NodeCount(opts.nodes));
        }
        let base = base_dir();
        let (id, run_dir) = {
            let _lock = global_lock(&base)?;
            let swept = sweep_locked(&base);
            if !swept.is_empty() {
                tracing::info!(ids = ?swept, "removed stale csync2 testbeds");
            }
            new_run_dir(&base)?
        };
        let data_path = data_root(&id).join("data");
        let mut tb = Testbed {
            id,
            base,
            run_dir,
            data_path,
            csync2: opts.csync2.clone(),
            nodes: Vec::new(),
            config: Mutex::new(String::new()),
            registry: Arc::new(Registry::default()),
            torn_down: false,
        };
        // From here on, an error drops `tb`, which tears down what exists.
        tb.build(&opts)?;
        tracing::debug!(id = %tb.id, nodes = opts.nodes, "csync2 testbed ready");
        Ok(tb)
    }

    fn build(&mut self, opts: &TestbedOptions) -> Result<(), TestbedError> {
        let n = opts.nodes;
        let names: Vec<String> = (1..=n).map(|i| format!("node{i}")).collect();
        let ns_dir = self.run_dir.join("ns");
        mkdir(&ns_dir)?;
        ns::make_private_dir(&ns_dir).map_err(|e| TestbedError::Io {
            what: format!("making {} a private mount", ns_dir.display()),
            source: e.into(),
        })?;
        fs::create_dir_all(&self.data_path)
            .map_err(io_err(format!("creating {}", self.data_path.display())))?;
        fs::create_dir_all(NODE_DB_MOUNT).map_err(io_err(format!("creating {NODE_DB_MOUNT}")))?;

        // The group key, once, copied to every node.
        let key = self.run_dir.join(KEY_FILE);
        run_checked(
            Command::new(&self.csync2).arg("-k").arg(&key),
            "csync2 -k (making the group key)",
        )?;
        let config = self.default_config(&names, &opts.extra_config);

        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (i, name) in names.iter().enumerate() {
            hosts.push_str(&format!("{}\t{name}\n", node_addr(i)));
        }

        // Network namespaces: created under the machine-wide lock, as the
        // first `ip netns add` on a machine sets up /run/netns.
        let bridge_ns = netns_name(&self.id, "br");
        let node_ns: Vec<String> = (1..=n)
            .map(|i| netns_name(&self.id, &format!("n{i}")))
            .collect();
        {
            let _lock = global_lock(&self.base)?;
            for name in std::iter::once(&bridge_ns).chain(&node_ns) {
                run_checked(
                    Command::new("ip").args(["netns", "add", name]),
                    &format!("ip netns add {name}"),
                )?;
            }
        }
        let mut batch = String::from("link add br0 type bridge\nlink set br0 up\n");
        for (i, ns_name) in node_ns.iter().enumerate() {
            batch.push_str(&format!(
                "link add v{} type veth peer name eth0 netns {ns_name}\nlink set v{} master br0 up\n",
                i + 1,
                i + 1
            ));
        }
        ip_batch(&bridge_ns, &batch)?;
        for (i, ns_name) in node_ns.iter().enumerate() {
            ip_batch(
                ns_name,
                &format!(
                    "addr add {}/24 dev eth0\nlink set eth0 up\nlink set lo up\n",
                    node_addr(i)
                ),
            )?;
        }

        for (i, name) in names.iter().enumerate() {
            let dir = self.run_dir.join(name);
            let node = NodeDirs::new(&dir);
            for d in [
                &dir,
                &node.data,
                &node.etc,
                &node.db,
                &node.state,
                &node.log,
            ] {
                mkdir(d)?;
            }
            write_file(&node.hosts, hosts.as_bytes())?;
            fs::copy(&key, node.etc.join(KEY_FILE))
                .map_err(io_err(format!("copying the key to {}", node.etc.display())))?;
            write_file(&node.etc.join("csync2.cfg"), config.as_bytes())?;

            let mnt_file = ns_dir.join(format!("{name}.mnt"));
            let uts_file = ns_dir.join(format!("{name}.uts"));
            write_file(&mnt_file, b"")?;
            write_file(&uts_file, b"")?;
            let plan = ns::NsPlan {
                hostname: name.as_bytes().to_vec(),
                binds: vec![
                    (
                        ns::cstring(&node.data).map_err(io_err("data dir"))?,
                        ns::cstring(&self.data_path).map_err(io_err("data path"))?,
                    ),
                    (
                        ns::cstring(&node.hosts).map_err(io_err("hosts"))?,
                        c"/etc/hosts".to_owned(),
                    ),
                    (
                        ns::cstring(&node.db).map_err(io_err("db dir"))?,
                        ns::cstring(Path::new(NODE_DB_MOUNT)).map_err(io_err("db mount"))?,
                    ),
                ],
            };
            ns::create_mnt_uts(&plan, &mnt_file, &uts_file)
                .map_err(io_err(format!("creating the mount namespace of {name}")))?;
            let netns_file = Path::new(NETNS_DIR).join(&node_ns[i]);
            let nsfds = NodeNs::open(&netns_file, &mnt_file, &uts_file)
                .map_err(io_err(format!("opening the namespaces of {name}")))?;
            self.nodes.push(Node {
                index: i,
                name: name.clone(),
                addr: node_addr(i),
                netns: node_ns[i].clone(),
                bridge_ns: bridge_ns.clone(),
                bridge_port: format!("v{}", i + 1),
                dir,
                host_data_dir: node.data,
                etc_dir: node.etc,
                db_dir: node.db,
                state_dir: node.state,
                log_dir: node.log,
                data_path: self.data_path.clone(),
                csync2: self.csync2.clone(),
                ns: Arc::new(nsfds),
                registry: Arc::clone(&self.registry),
            });
        }
        *lock(&self.config) = config;

        for (rel, content) in &opts.files {
            self.write_all(rel, content)?;
        }
        self.init_databases()
    }

    /// The testbed's id (`<pid>-<n>`), part of all its names.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`, 0-based (`node(0)` is `node1`).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The node called `name`.
    pub fn node_named(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The common absolute data path, the same inside every node.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// `<base>/<id>`: everything the testbed keeps on disk.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// `/srv/csw-<id>`: the parent of the data path.
    pub fn data_root(&self) -> PathBuf {
        data_root(&self.id)
    }

    /// The names of its network namespaces (`ip netns list`).
    pub fn netns_names(&self) -> Vec<String> {
        cleanup::netns_of(&self.id)
    }

    /// The csync2 binary the testbed runs.
    pub fn csync2_program(&self) -> &Path {
        &self.csync2
    }

    /// The csync2.cfg every node has now.
    pub fn config_text(&self) -> String {
        lock(&self.config).clone()
    }

    /// The default csync2.cfg for this testbed with `extra` inside the group:
    /// `nossl * *;` and group `testbed` with every node, the key and the data
    /// path.
    pub fn config_with(&self, extra: &str) -> String {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.default_config(&names, extra)
    }

    fn default_config(&self, names: &[String], extra: &str) -> String {
        let mut text = format!(
            "# csync2.cfg of csync2-watch testbed {}: the same on every node.\n\
             nossl * *;\n\n\
             group {GROUP}\n{{\n\thost {};\n\tkey {KEY_FILE};\n\tinclude {};\n",
            self.id,
            names.join(" "),
            self.data_path.display()
        );
        for line in extra.lines() {
            text.push('\t');
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("}\n");
        text
    }

    /// Write `text` as csync2.cfg on every node (atomically per node).
    pub fn set_config(&self, text: &str) -> Result<(), TestbedError> {
        for node in &self.nodes {
            let path = node.etc_dir.join("csync2.cfg");
            let tmp = node.etc_dir.join(".csync2.cfg.new");
            write_file(&tmp, text.as_bytes())?;
            fs::rename(&tmp, &path).map_err(io_err(format!("replacing {}", path.display())))?;
        }
        *lock(&self.config) = text.to_string();
        Ok(())
    }

    /// Start `csync2 -ii` on every node; returns when all listen.
    pub fn start_servers(&self) -> Result<Vec<ProcessHandle>, TestbedError> {
        self.nodes.iter().map(|n| n.start_csync2_server()).collect()
    }

    /// Record what is on every node's disk in its csync2 database without
    /// marking anything dirty (`csync2 -cIr <data path>`, all nodes at
    /// once). Do this after putting the same tree on every node, or the
    /// first update reports conflicts for files the peer's database does not
    /// know.
    pub fn init_databases(&self) -> Result<(), TestbedError> {
        let children: Vec<_> = self
            .nodes
            .iter()
            .map(|n| {
                n.csync2([OsStr::new("-cIr"), self.data_path.as_os_str()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(io_err(format!("starting csync2 -cIr on {}", n.name)))
            })
            .collect();
        let mut first_err = None;
        for (child, node) in children.into_iter().zip(&self.nodes) {
            let res = child.and_then(|c| {
                c.wait_with_output()
                    .map_err(io_err(format!("csync2 -cIr on {}", node.name)))
            });
            match res {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    first_err.get_or_insert(TestbedError::Command {
                        what: format!("csync2 -cIr on {}", node.name),
                        status: out.status.to_string(),
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    });
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Make every node's data a copy of node `from`'s (`cp -a`: content,
    /// modes, owners, mtimes, symlinks, special files; entries only the
    /// other nodes have stay), then [`init_databases`](Self::init_databases).
    /// For trees too big to build file by file on every node.
    pub fn seed_from(&self, from: usize) -> Result<(), TestbedError> {
        let src = self.nodes[from].host_data_dir.join(".");
        for node in self.nodes.iter().filter(|n| n.index != from) {
            run_checked(
                Command::new("cp")
                    .arg("-a")
                    .arg("--")
                    .arg(&src)
                    .arg(&node.host_data_dir),
                &format!("copying {}'s data to {}", self.nodes[from].name, node.name),
            )?;
        }
        self.init_databases()
    }

    /// Write `rel` (relative to the data path; parents created) with
    /// `content` on every node, with the same mtime everywhere.
    pub fn write_all(&self, rel: impl AsRef<Path>, content: &[u8]) -> Result<(), TestbedError> {
        let rel = rel.as_ref();
        if rel.as_os_str().is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(TestbedError::OutsideData(rel.to_path_buf()));
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mtime = UNIX_EPOCH + Duration::from_secs(secs);
        for node in &self.nodes {
            let path = node.host_path(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .map_err(io_err(format!("creating {}", parent.display())))?;
            }
            write_file(&path, content)?;
            fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(mtime))
                .map_err(io_err(format!("setting the mtime of {}", path.display())))?;
        }
        Ok(())
    }

    /// A snapshot of every node's data, in node order.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, TestbedError> {
        self.nodes
            .iter()
            .map(|n| {
                tree_snapshot(&n.host_data_dir)
                    .map_err(io_err(format!("snapshotting the data of {}", n.name)))
            })
            .collect()
    }

    /// How every other node's data differs from node1's (lines prefixed
    /// by the node pair); empty when all are identical.
    pub fn differences(&self) -> Result<Vec<String>, TestbedError> {
        let snaps = self.snapshots()?;
        let mut out = Vec::new();
        for (node, snap) in self.nodes.iter().zip(&snaps).skip(1) {
            out.extend(diff_trees_with(
                (&self.nodes[0].name, &snaps[0]),
                (&node.name, snap),
                DiffOptions::default(),
            ));
        }
        Ok(out)
    }

    /// Wait until every node's data is identical to node1's.
    pub fn wait_identical(&self, timeout: Duration) -> Result<(), TestbedError> {
        let mut last = Vec::new();
        let mut error = None;
        let ok = wait_until(timeout, || match self.differences() {
            Ok(d) => {
                last = d;
                last.is_empty()
            }
            Err(e) => {
                error = Some(e);
                true
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        if ok {
            Ok(())
        } else {
            Err(TestbedError::Differ {
                after: timeout,
                differences: last,
            })
        }
    }

    /// Tear down now and say whether anything was left behind (dropping does
    /// the same but can only log).
    pub fn teardown(mut self) -> Result<(), TestbedError> {
        let problems = self.teardown_inner();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TestbedError::Teardown(problems))
        }
    }

    fn teardown_inner(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        self.registry.terminate_all(KILL_GRACE);
        // Close our namespace descriptors before the namespaces go.
        self.nodes.clear();
        cleanup::teardown(&self.base, &self.id)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for p in self.teardown_inner() {
            tracing::warn!(id = %self.id, "testbed teardown: {p}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 231, 0, (i + 1) as u8)
}

fn mkdir(p: &Path) -> Result<(), TestbedError> {
    fs::create_dir_all(p).map_err(io_err(format!("creating {}", p.display())))
}

fn write_file(p: &Path, content: &[u8]) -> Result<(), TestbedError> {
    fs::write(p, content).map_err(io_err(format!("writing {}", p.display())))
}

/// Make `<base>/<id>` for a new id and record this process as its owner.
/// Call with the global lock held.
fn new_run_dir(base: &Path) -> Result<(String, PathBuf), TestbedError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let pid = std::process::id();
    loop {
        let id = format!("{pid}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = base.join(&id);
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(io_err(format!("chmod {}", dir.display())))?;
                let owner = cleanup::owner_text()
                    .map_err(io_err(format!("recording the owner of {}", dir.display())));
                let written = owner.and_then(|t| write_file(&dir.join("owner"), t.as_bytes()));
                if let Err(e) = written {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e);
                }
                return Ok((id, dir));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("creating {}", dir.display()))(e)),
        }
    }
}

fn ip_batch(netns: &str, commands: &str) -> Result<(), TestbedError> {
    use std::io::Write;
    let what = format!("ip -n {netns} -batch");
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("starting {what}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(commands.as_bytes())
            .map_err(io_err(format!("feeding {what}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("waiting for {what}")))?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            what: format!("{what} ({})", commands.trim().replace('\n', "; ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

struct NodeDirs {
    data: PathBuf,
    etc: PathBuf,
    db: PathBuf,
    state: PathBuf,
    log: PathBuf,
    hosts: PathBuf,
}

impl NodeDirs {
    fn new(dir: &Path) -> Self {
        NodeDirs {
            data: dir.join("data"),
            etc: dir.join("etc"),
            db: dir.join("db"),
            state: dir.join("state"),
            log: dir.join("log"),
            hosts: dir.join("hosts"),
        }
    }
}

/// One node of a testbed.
pub struct Node {
    index: usize,
    name: String,
    addr: Ipv4Addr,
    netns: String,
    bridge_ns: String,
    bridge_port: String,
    dir: PathBuf,
    host_data_dir: PathBuf,
    etc_dir: PathBuf,
    db_dir: PathBuf,
    state_dir: PathBuf,
    log_dir: PathBuf,
    data_path: PathBuf,
    csync2: PathBuf,
    ns: Arc<NodeNs>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("netns", &self.netns)
            .finish()
    }
}

impl Node {
    /// `node1`, `node2`, ...: its csync2 name, host name and hostname.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// 0-based position in the testbed.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its address, 10.231.0.<index + 1>. It exists only inside the
    /// testbed's namespaces: reach it from another node
    /// ([`connect`](Self::connect), [`command`](Self::command)), never from
    /// the root namespace, where traffic to it would follow the host's
    /// default route off the machine.
    pub fn addr(&self) -> IpAddr {
        IpAddr::V4(self.addr)
    }

    /// Its network namespace's name (`ip -n <name> ...`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its directory under the testbed's run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its data, seen from the root namespace (the common data path inside
    /// the node).
    pub fn host_data_dir(&self) -> &Path {
        &self.host_data_dir
    }

    /// `rel` below its data, seen from the root namespace.
    pub fn host_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.host_data_dir.join(rel)
    }

    /// `rel` below the data path, as seen inside the node (to pass to
    /// programs running there).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.data_path.join(rel)
    }

    /// The common data path.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// Its `CSYNC2_SYSTEM_DIR` (csync2.cfg and the key).
    pub fn etc_dir(&self) -> &Path {
        &self.etc_dir
    }

    /// Its csync2 database directory (also mounted at `/var/lib/csync2`
    /// inside the node); the database is `<db_dir>/<name>.db3`.
    pub fn db_dir(&self) -> &Path {
        &self.db_dir
    }

    /// An empty directory for a daemon's state (e.g. csync2-watch's
    /// `--state-dir`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Where [`spawn_logged`](Self::spawn_logged) writes logs.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// A command that runs inside the node (its network, UTS and mount
    /// namespaces) with `CSYNC2_SYSTEM_DIR` set to its etc dir.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("CSYNC2_SYSTEM_DIR", &self.etc_dir);
        ns::enter_on_exec(&mut cmd, Arc::clone(&self.ns));
        cmd
    }

    /// `csync2 -N <name> -D <db dir> <args>` inside the node.
    pub fn csync2<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(&self.csync2);
        cmd.arg("-N")
            .arg(&self.name)
            .arg("-D")
            .arg(&self.db_dir)
            .args(args);
        cmd
    }

    /// Run `csync2 <args>` on the node to completion (stdin empty).
    pub fn run_csync2<I, S>(&self, args: I) -> Result<Output, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.csync2(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("running csync2 on {}", self.name)))
    }

    /// The lines of `csync2 -M` (what is still dirty here), raw bytes; empty
    /// when nothing is dirty.
    pub fn dirty(&self) -> Result<Vec<Vec<u8>>, TestbedError> {
        let out = self.run_csync2(["-M"])?;
        // -M exits 2 when it lists nothing.
        if !out.status.success() && out.status.code() != Some(2) {
            return Err(TestbedError::Command {
                what: format!("csync2 -M on {}", self.name),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Start `cmd` (made by [`command`](Self::command) or
    /// [`csync2`](Self::csync2)) as the leader of a new process group,
    /// tracked by the testbed.
    pub fn spawn(&self, cmd: Command) -> Result<ProcessHandle, TestbedError> {
        self.spawn_inner(cmd, None)
    }

    /// [`spawn`](Self::spawn) with stdout and stderr appended to
    /// `<log dir>/<log_name>.log` (stdin empty).
    pub fn spawn_logged(
        &self,
        mut cmd: Command,
        log_name: &str,
    ) -> Result<ProcessHandle, TestbedError> {
        let path = self.log_dir.join(format!("{log_name}.log"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        let err = file
            .try_clone()
            .map_err(io_err(format!("duplicating {}", path.display())))?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        self.spawn_inner(cmd, Some(path))
    }

    fn spawn_inner(
        &self,
        mut cmd: Command,
        log: Option<PathBuf>,
    ) -> Result<ProcessHandle, TestbedError> {
        use std::os::unix::process::CommandExt;
        let label = format!(
            "{} on {}",
            Path::new(cmd.get_program()).display(),
            self.name
        );
        cmd.process_group(0);
        let child = cmd.spawn().map_err(io_err(format!("starting {label}")))?;
        Ok(self.registry.register(child, label, log))
    }

    /// `csync2 -ii` on the node, logging to `<log dir>/csync2-server.log`;
    /// returns once it listens on [`CSYNC2_PORT`].
    pub fn start_csync2_server(&self) -> Result<ProcessHandle, TestbedError> {
        self.start_csync2_server_with::<[&str; 0], _>([])
    }

    /// [`start_csync2_server`](Self::start_csync2_server) with extra
    /// arguments (e.g. `-v`).
    pub fn start_csync2_server_with<I, S>(&self, extra: I) -> Result<ProcessHandle, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.csync2(["-ii"]);
        cmd.args(extra);
        let h = self.spawn_logged(cmd, "csync2-server")?;
        let mut exited = None;
        let up = wait_until(SERVER_START_TIMEOUT, || {
            if let Some(s) = h.try_wait() {
                exited = Some(s);
                return true;
            }
            self.listening(CSYNC2_PORT).unwrap_or(false)
        });
        if let Some(s) = exited {
            return Err(TestbedError::Command {
                what: format!("csync2 -ii on {}", self.name),
                status: s.to_string(),
                stderr: h.log_text().trim().to_string(),
            });
        }
        if !up {
            return Err(TestbedError::Timeout {
                what: format!(
                    "csync2 -ii on {} listening on port {CSYNC2_PORT}",
                    self.name
                ),
                after: SERVER_START_TIMEOUT,
            });
        }
        Ok(h)
    }

    /// Is a TCP socket listening on `port` in the node's network namespace?
    pub fn listening(&self, port: u16) -> io::Result<bool> {
        ns::listening_in(&self.ns, port)
    }

    /// Open a TCP connection from inside this node (never from the root
    /// namespace) to `to`, within `timeout`.
    pub fn connect(&self, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        ns::connect_in(&self.ns, to, timeout)
    }

    /// Take its own link (`eth0`) down. Connections from other nodes to it
    /// hang (as with a pulled cable; csync2 has no connect timeout), while
    /// its own connections fail at once with "network unreachable" (its
    /// route is gone). See [`switch_port_down`](Self::switch_port_down) for
    /// a cut that hangs both ways.
    pub fn link_down(&self) -> Result<(), TestbedError> {
        self.set_link(&self.netns, "eth0", "down")
    }

    /// Bring its own link back up.
    pub fn link_up(&self) -> Result<(), TestbedError> {
        self.set_link(&self.netns, "eth0", "up")
    }

    /// Take the bridge's port to this node down (the switch side): the node
    /// keeps its address and route, and connections hang in both
    /// directions.
    pub fn switch_port_down(&self) -> Result<(), TestbedError> {
        self.set_link(&self.bridge_ns, &self.bridge_port, "down")
    }

    /// Bring the bridge's port to this node back up.
    pub fn switch_port_up(&self) -> Result<(), TestbedError> {
        self.set_link(&self.bridge_ns, &self.bridge_port, "up")
    }

    fn set_link(&self, netns: &str, dev: &str, state: &str) -> Result<(), TestbedError> {
        run_checked(
            Command::new("ip").args(["-n", netns, "link", "set", dev, state]),
            &format!("ip -n {netns} link set {dev} {state}"),
        )
        .map(drop)
    }

    /// `nsenter` arguments that run a program inside the node, for code that
    /// can only prefix a command line (`nsenter --net=... --uts=...
    /// --mount=... --`); `CSYNC2_SYSTEM_DIR` is not set by it.
    pub fn nsenter_args(&self) -> Vec<OsString> {
        let ns_dir = self.dir.parent().unwrap_or(Path::new("/")).join("ns");
        let opt = |flag: &str, p: &Path| {
            let mut s = OsString::from(flag);
            s.push(p.as_os_str());
            s
        };
        vec![
            OsString::from("nsenter"),
            opt("--net=", &Path::new(NETNS_DIR).join(&self.netns)),
            opt("--uts=", &ns_dir.join(format!("{}.uts", self.name))),
            opt("--mount=", &ns_dir.join(format!("{}.mnt", self.name))),
            OsString::from("--"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testbed_parts_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Testbed>();
        shareable::<Node>();
        shareable::<ProcessHandle>();
        shareable::<TestbedError>();
    }

    #[test]
    fn wait_until_polls_until_true_and_gives_up_after_the_timeout() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(30), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        assert!(!wait_until(Duration::from_millis(20), || false));
    }
}
