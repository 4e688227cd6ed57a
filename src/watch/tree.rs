//! The directory model of the watcher: one node per descended directory
//! (parent + name, never a full path), the map from inotify watch
//! descriptors to nodes, and path building on demand. Moving a directory is
//! an O(1) re-parenting: every descendant's path follows.
//!
//! A node is *attached* when its parent chain reaches the root (`/`); a
//! directory moved away whose destination is not known yet is *detached*
//! (an orphan): its watches stay until the move is resolved, but it has no
//! path.

#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// Index of a node in the slab.
pub(super) type Id = u32;
/// No node (the root's parent, a detached node's parent).
pub(super) const NONE: Id = u32::MAX;
/// The node of `/`.
pub(super) const ROOT: Id = 0;

/// A node's identity that survives slot reuse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct Key {
    id: Id,
    gen: u32,
}

#[derive(Debug)]
struct Node {
    parent: Id,
    gen: u32,
    /// inotify watch descriptor, -1 when none.
    wd: i32,
    live: bool,
    /// The watch could not be added: the subtree is not covered.
    failed: bool,
    /// st_dev of the directory (0 until listed).
    dev: u64,
    name: Box<OsStr>,
    children: Vec<Id>,
}

/// Directories with more subdirectories than this get a name index.
const INDEX_AT: usize = 64;
/// In a name index: more than one child has this name hash (look by
/// scanning).
const SHARED_HASH: Id = NONE;

/// The slab of directory nodes.
#[derive(Debug)]
pub(super) struct Tree {
    nodes: Vec<Node>,
    free: Vec<Id>,
    by_wd: HashMap<i32, Id>,
    failed: usize,
    /// Name hash -> child, for nodes with many children (a linear scan of
    /// thousands of names per event would be quadratic in a storm). Keyed
    /// by hash so that names are not stored twice.
    index: HashMap<Id, HashMap<u64, Id>>,
    hasher: RandomState,
}

impl Tree {
    /// A tree holding only `/`, unwatched.
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                parent: NONE,
                gen: 0,
                wd: -1,
                live: true,
                failed: false,
                dev: 0,
                name: Box::from(OsStr::new("")),
                children: Vec::new(),
            }],
            free: Vec::new(),
            by_wd: HashMap::new(),
            failed: 0,
            index: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// A new unwatched node named `name` below `parent`.
    pub fn alloc(&mut self, parent: Id, name: &OsStr) -> Id {
        let name: Box<OsStr> = Box::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                let n = &mut self.nodes[id as usize];
                debug_assert!(!n.live);
                n.parent = parent;
                n.wd = -1;
                n.live = true;
                n.failed = false;
                n.dev = 0;
                n.name = name;
                n.children.clear();
                id
            }
            None => {
                let id = self.nodes.len() as Id;
                self.nodes.push(Node {
                    parent,
                    gen: 0,
                    wd: -1,
                    live: true,
                    failed: false,
                    dev: 0,
                    name,
                    children: Vec::new(),
                });
                id
            }
        };
        if parent != NONE {
            self.link(parent, id);
        }
        id
    }

    fn hash(&self, name: &[u8]) -> u64 {
        self.hasher.hash_one(name)
    }

    /// Add `id` (named already) to `parent`'s children.
    fn link(&mut self, parent: Id, id: Id) {
        self.nodes[parent as usize].children.push(id);
        if self.index.contains_key(&parent) {
            let h = self.hash(self.nodes[id as usize].name.as_bytes());
            let ix = self.index.get_mut(&parent).unwrap();
            ix.entry(h).and_modify(|e| *e = SHARED_HASH).or_insert(id);
        } else if self.nodes[parent as usize].children.len() > INDEX_AT {
            let mut ix: HashMap<u64, Id> = HashMap::new();
            for &c in &self.nodes[parent as usize].children {
                let h = self.hash(self.nodes[c as usize].name.as_bytes());
                ix.entry(h).and_modify(|e| *e = SHARED_HASH).or_insert(c);
            }
            self.index.insert(parent, ix);
        }
    }

    pub fn key(&self, id: Id) -> Key {
        Key {
            id,
            gen: self.nodes[id as usize].gen,
        }
    }

    /// The node `key` names, if it still exists.
    pub fn get(&self, key: Key) -> Option<Id> {
        let n = self.nodes.get(key.id as usize)?;
        (n.live && n.gen == key.gen).then_some(key.id)
    }

    pub fn is_live(&self, id: Id) -> bool {
        self.nodes.get(id as usize).is_some_and(|n| n.live)
    }

    /// The child directory node called `name`, if any.
    pub fn child(&self, parent: Id, name: &OsStr) -> Option<Id> {
        let bytes = name.as_bytes();
        if let Some(ix) = self.index.get(&parent) {
            match ix.get(&self.hash(bytes)) {
                None => return None,
                Some(&SHARED_HASH) => {}
                Some(&c) => return (self.nodes[c as usize].name.as_bytes() == bytes).then_some(c),
            }
        }
        self.nodes[parent as usize]
            .children
            .iter()
            .copied()
            .find(|&c| self.nodes[c as usize].name.as_bytes() == bytes)
    }

    pub fn children(&self, id: Id) -> &[Id] {
        &self.nodes[id as usize].children
    }

    pub fn name(&self, id: Id) -> &OsStr {
        &self.nodes[id as usize].name
    }

    pub fn parent(&self, id: Id) -> Id {
        self.nodes[id as usize].parent
    }

    pub fn dev(&self, id: Id) -> u64 {
        self.nodes[id as usize].dev
    }

    pub fn set_dev(&mut self, id: Id, dev: u64) {
        self.nodes[id as usize].dev = dev;
    }

    /// The node's watch descriptor.
    pub fn wd(&self, id: Id) -> Option<i32> {
        let wd = self.nodes[id as usize].wd;
        (wd >= 0).then_some(wd)
    }

    /// The node watched by `wd`.
    pub fn by_wd(&self, wd: i32) -> Option<Id> {
        self.by_wd.get(&wd).copied()
    }

    /// Record that `id` is watched by `wd` (which must not belong to
    /// another node). Returns the node's previous descriptor, if different.
    pub fn set_wd(&mut self, id: Id, wd: i32) -> Option<i32> {
        debug_assert!(self.by_wd.get(&wd).is_none_or(|&o| o == id));
        let old = self.nodes[id as usize].wd;
        if old == wd {
            return None;
        }
        if old >= 0 {
            self.by_wd.remove(&old);
        }
        self.nodes[id as usize].wd = wd;
        self.by_wd.insert(wd, id);
        self.set_failed(id, false);
        (old >= 0).then_some(old)
    }

    /// Forget the node's watch descriptor (the caller removes the watch or
    /// knows the kernel dropped it). Returns it.
    pub fn clear_wd(&mut self, id: Id) -> Option<i32> {
        let n = &mut self.nodes[id as usize];
        let old = n.wd;
        n.wd = -1;
        if old >= 0 {
            self.by_wd.remove(&old);
            Some(old)
        } else {
            None
        }
    }

    /// Number of watched directories.
    pub fn watched(&self) -> usize {
        self.by_wd.len()
    }

    pub fn is_failed(&self, id: Id) -> bool {
        self.nodes[id as usize].failed
    }

    pub fn set_failed(&mut self, id: Id, failed: bool) {
        let n = &mut self.nodes[id as usize];
        if n.failed != failed {
            n.failed = failed;
            if failed {
                self.failed += 1;
            } else {
                self.failed -= 1;
            }
        }
    }

    /// Number of nodes whose watch could not be added.
    pub fn failed_count(&self) -> usize {
        self.failed
    }

    /// Paths of the attached nodes whose watch could not be added.
    pub fn failed_paths(&self) -> Vec<PathBuf> {
        if self.failed == 0 {
            return Vec::new();
        }
        let mut out: Vec<PathBuf> = (0..self.nodes.len() as Id)
            .filter(|&id| self.nodes[id as usize].live && self.nodes[id as usize].failed)
            .filter_map(|id| self.path(id))
            .collect();
        out.sort();
        out
    }

    /// The attached nodes whose watch could not be added.
    pub fn failed_ids(&self) -> Vec<Id> {
        if self.failed == 0 {
            return Vec::new();
        }
        (0..self.nodes.len() as Id)
            .filter(|&id| self.nodes[id as usize].live && self.nodes[id as usize].failed)
            .filter(|&id| self.is_attached(id))
            .collect()
    }

    /// Unlink `id` from its parent: it becomes a detached orphan.
    pub fn detach(&mut self, id: Id) {
        let parent = self.nodes[id as usize].parent;
        if parent != NONE {
            let siblings = &mut self.nodes[parent as usize].children;
            if let Some(pos) = siblings.iter().position(|&c| c == id) {
                siblings.swap_remove(pos);
            }
            if self.index.contains_key(&parent) {
                if self.nodes[parent as usize].children.len() <= INDEX_AT / 2 {
                    self.index.remove(&parent);
                } else {
                    let h = self.hash(self.nodes[id as usize].name.as_bytes());
                    let ix = self.index.get_mut(&parent).unwrap();
                    // A shared hash stays shared: lookups scan, still right.
                    if ix.get(&h) == Some(&id) {
                        ix.remove(&h);
                    }
                }
            }
            self.nodes[id as usize].parent = NONE;
        }
    }

    /// Link a detached node below `parent` as `name`.
    pub fn attach(&mut self, id: Id, parent: Id, name: &OsStr) {
        debug_assert_eq!(self.nodes[id as usize].parent, NONE);
        let n = &mut self.nodes[id as usize];
        n.parent = parent;
        if *n.name != *name {
            n.name = Box::from(name);
        }
        self.link(parent, id);
    }

    /// Is `a` a (strict or not) ancestor of `b`?
    pub fn is_ancestor(&self, a: Id, b: Id) -> bool {
        let mut cur = b;
        while cur != NONE {
            if cur == a {
                return true;
            }
            cur = self.nodes[cur as usize].parent;
        }
        false
    }

    /// Is the node linked to the root?
    pub fn is_attached(&self, id: Id) -> bool {
        self.is_live(id) && self.is_ancestor(ROOT, id)
    }

    /// The node's path, `None` when detached.
    pub fn path(&self, id: Id) -> Option<PathBuf> {
        let mut p = PathBuf::new();
        self.path_into(id, &mut p).then_some(p)
    }

    /// Write the node's path into `out` (cleared first). False when the
    /// node is detached (out is then meaningless).
    pub fn path_into(&self, id: Id, out: &mut PathBuf) -> bool {
        let mut chain: Vec<Id> = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            if cur == NONE || !self.nodes[cur as usize].live {
                return false;
            }
            chain.push(cur);
            cur = self.nodes[cur as usize].parent;
        }
        let mut bytes: Vec<u8> = std::mem::take(out).into_os_string().into_vec();
        bytes.clear();
        bytes.push(b'/');
        for (i, &c) in chain.iter().rev().enumerate() {
            if i > 0 {
                bytes.push(b'/');
            }
            bytes.extend_from_slice(self.nodes[c as usize].name.as_bytes());
        }
        *out = PathBuf::from(std::ffi::OsString::from_vec(bytes));
        true
    }

    /// Free `id` and its whole subtree; `on_wd` gets every watch
    /// descriptor that was still recorded (already unmapped).
    pub fn remove_subtree(&mut self, id: Id, mut on_wd: impl FnMut(i32)) {
        if id == ROOT || !self.is_live(id) {
            return;
        }
        self.detach(id);
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            if let Some(wd) = self.clear_wd(cur) {
                on_wd(wd);
            }
            self.set_failed(cur, false);
            self.index.remove(&cur);
            let n = &mut self.nodes[cur as usize];
            stack.append(&mut n.children);
            n.live = false;
            n.gen = n.gen.wrapping_add(1);
            n.parent = NONE;
            n.name = Box::from(OsStr::new(""));
            self.free.push(cur);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn paths_follow_reparenting() {
        let mut t = Tree::new();
        let a = t.alloc(ROOT, OsStr::new("a"));
        let b = t.alloc(a, OsStr::new("b"));
        let c = t.alloc(b, OsStr::new("c"));
        assert_eq!(t.path(ROOT).unwrap(), Path::new("/"));
        assert_eq!(t.path(c).unwrap(), Path::new("/a/b/c"));
        t.detach(b);
        assert_eq!(t.path(c), None);
        assert!(!t.is_attached(c));
        t.attach(b, ROOT, OsStr::new("x"));
        assert_eq!(t.path(c).unwrap(), Path::new("/x/c"));
        assert_eq!(t.child(ROOT, OsStr::new("x")), Some(b));
        assert_eq!(t.child(a, OsStr::new("b")), None);
    }

    #[test]
    fn removed_subtree_frees_watches_and_keys() {
        let mut t = Tree::new();
        let a = t.alloc(ROOT, OsStr::new("a"));
        let b = t.alloc(a, OsStr::new("b"));
        t.set_wd(a, 1);
        t.set_wd(b, 2);
        let kb = t.key(b);
        let mut wds = Vec::new();
        t.remove_subtree(a, |wd| wds.push(wd));
        wds.sort();
        assert_eq!(wds, vec![1, 2]);
        assert_eq!(t.watched(), 0);
        assert_eq!(t.get(kb), None);
        let n = t.alloc(ROOT, OsStr::new("n"));
        let n2 = t.alloc(n, OsStr::new("m"));
        // Slots are reused, keys are not.
        assert!(n == a || n == b || n2 == a || n2 == b);
        assert_eq!(t.get(kb), None);
        assert_eq!(t.by_wd(1), None);
    }

    #[test]
    fn big_directories_find_children_by_index() {
        let mut t = Tree::new();
        let big = t.alloc(ROOT, OsStr::new("big"));
        let ids: Vec<Id> = (0..200)
            .map(|i| t.alloc(big, OsStr::new(&format!("c{i}"))))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(t.child(big, OsStr::new(&format!("c{i}"))), Some(id));
        }
        t.detach(ids[7]);
        assert_eq!(t.child(big, OsStr::new("c7")), None);
        t.attach(ids[7], big, OsStr::new("renamed"));
        assert_eq!(t.child(big, OsStr::new("renamed")), Some(ids[7]));
        t.remove_subtree(ids[8], |_| {});
        assert_eq!(t.child(big, OsStr::new("c8")), None);
        for &id in &ids[20..] {
            t.remove_subtree(id, |_| {});
        }
        // Back to a linear scan below the threshold, still right.
        assert_eq!(t.child(big, OsStr::new("c3")), Some(ids[3]));
        assert_eq!(t.child(big, OsStr::new("c30")), None);
        assert_eq!(t.children(big).len(), 19);
    }

    #[test]
    fn non_utf8_names_are_kept_byte_exact() {
        let mut t = Tree::new();
        let raw = OsStr::from_bytes(b"\xff\n -x");
        let a = t.alloc(ROOT, raw);
        assert_eq!(t.path(a).unwrap().as_os_str().as_bytes(), b"/\xff\n -x");
    }
}
