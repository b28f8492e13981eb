//! What a child's environment needs so that socksify follows it across
//! `exec`: `env -i prog`, python's `subprocess.run(..., env={})` and the
//! like hand the child an environment without `LD_PRELOAD` and the
//! `SOCKSIFY_*` variables, and without them the child's traffic goes
//! direct. The exec hooks give such a child back what it lost.
//!
//! The rule: the child keeps every variable it was given. Our library is
//! put first in its `LD_PRELOAD` if no `libsocksify.so` is there; each
//! variable our configuration was read from that the child lacks is added
//! with our value. A child that sets a `SOCKSIFY_*` variable of its own
//! (a nested `socksify` with another proxy) keeps it. A proxy that came
//! from curl's `ALL_PROXY` is carried as `SOCKSIFY_PROXY`, so the child's
//! own `ALL_PROXY`, if any, stays what it was.

use socksify_proto::config::proxy_source::{self, ProxySource};

/// The file name the library is known by in `LD_PRELOAD`, whatever its
/// directory: any socksify build already there is left alone.
const LIBRARY_FILE: &[u8] = b"libsocksify.so";

/// The configuration a child must inherit: taken from our environment as
/// it was when the library was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// `NAME=value` entries, without NUL.
    vars: Vec<Vec<u8>>,
    /// Our library's path, as the dynamic loader found it.
    library: Vec<u8>,
}

/// How the child's environment changes: its entry `replace.0` becomes
/// `replace.1`, then `add` is appended. Entries are `NAME=value`, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Additions {
    pub replace: Option<(usize, Vec<u8>)>,
    pub add: Vec<Vec<u8>>,
}

impl Carried {
    /// From the `NAME=value` entries of our environment at load and the
    /// path of our library: every `SOCKSIFY_*` variable, and the proxy
    /// from `ALL_PROXY` when that is where our configuration found it.
    pub fn from_environment<'a>(entries: impl IntoIterator<Item = &'a [u8]>, library: &[u8]) -> Carried {
        let entries: Vec<&[u8]> = entries.into_iter().collect();
        let mut vars: Vec<Vec<u8>> =
            entries.iter().filter(|e| e.starts_with(b"SOCKSIFY_") && e.contains(&b'=')).map(|e| e.to_vec()).collect();
        let get = |name: &str| value_of(&entries, name.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned());
        let choice = proxy_source::choose(&get);
        if let ProxySource::AllProxy(_) = choice.source {
            if value_of(&entries, b"SOCKSIFY_PROXY").is_none() {
                vars.push([b"SOCKSIFY_PROXY=".as_slice(), choice.text.as_bytes()].concat());
            }
        }
        Carried { vars, library: library.to_vec() }
    }

    /// What `child` (its `NAME=value` entries) lacks, or `None` when it
    /// already carries the library and the configuration (the usual case:
    /// the child inherited our environment), so nothing need be built.
    pub fn additions(&self, child: &[&[u8]]) -> Option<Additions> {
        let mut replace = None;
        let mut add = Vec::new();
        match child.iter().position(|e| name_is(e, b"LD_PRELOAD")) {
            Some(i) => {
                let value = &child[i][b"LD_PRELOAD=".len()..];
                if !preloads_us(value) {
                    let joined = if value.is_empty() { self.library.clone() } else { [&self.library[..], b":", value].concat() };
                    replace = Some((i, [b"LD_PRELOAD=".as_slice(), &joined].concat()));
                }
            }
            None => add.push([b"LD_PRELOAD=".as_slice(), &self.library].concat()),
        }
        for var in &self.vars {
            let name = &var[..var.iter().position(|&b| b == b'=').unwrap_or(var.len())];
            if !child.iter().any(|e| name_is(e, name)) {
                add.push(var.clone());
            }
        }
        (replace.is_some() || !add.is_empty()).then_some(Additions { replace, add })
    }
}

impl Carried {
    /// Our library's path.
    pub fn library(&self) -> &[u8] {
        &self.library
    }

    /// The whole environment of the supervisor started for a program
    /// `LD_PRELOAD` cannot follow: the child's, with every
    /// `libsocksify.so` taken out of `LD_PRELOAD` (the supervisor and its
    /// program must not carry the shim: it would proxy them a second
    /// time), and the configuration the child lacks added.
    pub fn for_supervisor(&self, child: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::with_capacity(child.len() + self.vars.len());
        for entry in child {
            if !name_is(entry, b"LD_PRELOAD") {
                out.push(entry.to_vec());
                continue;
            }
            let value = &entry[b"LD_PRELOAD=".len()..];
            let kept: Vec<&[u8]> =
                value.split(|&b| b == b':' || b == b' ').filter(|p| !p.is_empty() && !is_library(p)).collect();
            if !kept.is_empty() {
                out.push([b"LD_PRELOAD=".as_slice(), &kept.join(&b':')].concat());
            }
        }
        for var in &self.vars {
            let name = &var[..var.iter().position(|&b| b == b'=').unwrap_or(var.len())];
            if !child.iter().any(|e| name_is(e, name)) {
                out.push(var.clone());
            }
        }
        out
    }
}

impl Additions {
    /// The names of the variables that were missing, for a log line.
    pub fn names(&self) -> Vec<String> {
        let name = |e: &Vec<u8>| String::from_utf8_lossy(&e[..e.iter().position(|&b| b == b'=').unwrap_or(e.len())]).into_owned();
        self.replace.iter().map(|(_, e)| name(e)).chain(self.add.iter().map(name)).collect()
    }
}

/// Whether `entry` is `name=...`.
fn name_is(entry: &[u8], name: &[u8]) -> bool {
    entry.len() > name.len() && entry.starts_with(name) && entry[name.len()] == b'='
}

/// The value of the first entry named `name` (as `getenv` finds it).
fn value_of<'a>(entries: &[&'a [u8]], name: &[u8]) -> Option<&'a [u8]> {
    entries.iter().find(|e| name_is(e, name)).map(|e| &e[name.len() + 1..])
}

/// Whether an `LD_PRELOAD` value (entries split by `:` or spaces, as
/// ld.so reads it) names a `libsocksify.so`.
fn preloads_us(value: &[u8]) -> bool {
    value.split(|&b| b == b':' || b == b' ').any(is_library)
}

/// Whether a path names a `libsocksify.so`.
fn is_library(path: &[u8]) -> bool {
    path.rsplit(|&b| b == b'/').next() == Some(LIBRARY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &[u8] = b"/opt/socksify/lib/libsocksify.so";

    fn carried(env: &[&str]) -> Carried {
        Carried::from_environment(env.iter().map(|e| e.as_bytes()), LIB)
    }

    fn child_after(c: &Carried, child: &[&str]) -> Vec<String> {
        let entries: Vec<&[u8]> = child.iter().map(|e| e.as_bytes()).collect();
        let Some(a) = c.additions(&entries) else { return child.iter().map(|s| s.to_string()).collect() };
        let mut out: Vec<Vec<u8>> = entries.iter().map(|e| e.to_vec()).collect();
        if let Some((i, e)) = a.replace {
            out[i] = e;
        }
        out.extend(a.add);
        out.into_iter().map(|e| String::from_utf8(e).unwrap()).collect()
    }

    #[test]
    fn an_empty_environment_gets_the_library_and_every_socksify_variable() {
        let c = carried(&["PATH=/bin", "SOCKSIFY_PROXY=socks5h://127.0.0.1:9", "LD_PRELOAD=/x/libsocksify.so", "SOCKSIFY_NO_PROXY="]);
        assert_eq!(
            child_after(&c, &[]),
            ["LD_PRELOAD=/opt/socksify/lib/libsocksify.so", "SOCKSIFY_PROXY=socks5h://127.0.0.1:9", "SOCKSIFY_NO_PROXY="]
        );
    }

    #[test]
    fn an_inherited_environment_needs_nothing() {
        let c = carried(&["SOCKSIFY_PROXY=socks5h://127.0.0.1:9", "LD_PRELOAD=/x/libsocksify.so"]);
        let child: Vec<&[u8]> = vec![b"LD_PRELOAD=/x/libsocksify.so", b"SOCKSIFY_PROXY=socks5h://127.0.0.1:9", b"HOME=/"];
        assert_eq!(c.additions(&child), None);
        // Another socksify build (installed vs. source tree) counts as ours.
        let child: Vec<&[u8]> = vec![b"LD_PRELOAD=/usr/lib/x.so /usr/lib/libsocksify.so", b"SOCKSIFY_PROXY=x"];
        assert_eq!(c.additions(&child), None);
    }

    #[test]
    fn another_preload_keeps_its_place_after_ours() {
        let c = carried(&[]);
        assert_eq!(
            child_after(&c, &["A=1", "LD_PRELOAD=/lib/other.so"]),
            ["A=1", "LD_PRELOAD=/opt/socksify/lib/libsocksify.so:/lib/other.so"]
        );
        assert_eq!(child_after(&c, &["LD_PRELOAD="]), ["LD_PRELOAD=/opt/socksify/lib/libsocksify.so"]);
        // A look-alike name is not ours.
        assert_eq!(
            child_after(&c, &["LD_PRELOAD=/lib/libsocksify.so.old"]),
            ["LD_PRELOAD=/opt/socksify/lib/libsocksify.so:/lib/libsocksify.so.old"]
        );
    }

    #[test]
    fn the_childs_own_settings_are_kept() {
        let c = carried(&["SOCKSIFY_PROXY=socks5h://127.0.0.1:9", "SOCKSIFY_UDP=block"]);
        assert_eq!(
            child_after(&c, &["SOCKSIFY_PROXY=socks5://10.0.0.1:1080", "SOCKSIFY_UDPX=1"]),
            [
                "SOCKSIFY_PROXY=socks5://10.0.0.1:1080",
                "SOCKSIFY_UDPX=1",
                "LD_PRELOAD=/opt/socksify/lib/libsocksify.so",
                "SOCKSIFY_UDP=block"
            ]
        );
    }

    #[test]
    fn a_proxy_from_all_proxy_is_carried_as_socksify_proxy() {
        let c = carried(&["ALL_PROXY=socks5h://10.1.1.1:1080"]);
        assert_eq!(
            child_after(&c, &["ALL_PROXY=http://other:3128"]),
            ["ALL_PROXY=http://other:3128", "LD_PRELOAD=/opt/socksify/lib/libsocksify.so", "SOCKSIFY_PROXY=socks5h://10.1.1.1:1080"]
        );
        // An ALL_PROXY the configuration passed over is not carried; nor is one under SOCKSIFY_PROXY.
        assert_eq!(carried(&["ALL_PROXY=http://x:1"]).vars, Vec::<Vec<u8>>::new());
        assert_eq!(carried(&["ALL_PROXY=socks5://x:1", "SOCKSIFY_PROXY=socks5://y:2"]).vars, vec![b"SOCKSIFY_PROXY=socks5://y:2".to_vec()]);
    }

    #[test]
    fn the_supervisors_environment_has_the_configuration_and_not_the_library() {
        let c = carried(&["SOCKSIFY_PROXY=socks5h://127.0.0.1:9"]);
        let child: Vec<&[u8]> = vec![b"A=1", b"LD_PRELOAD=/a.so:/x/libsocksify.so /b.so"];
        let env: Vec<String> = c.for_supervisor(&child).into_iter().map(|e| String::from_utf8(e).unwrap()).collect();
        assert_eq!(env, ["A=1", "LD_PRELOAD=/a.so:/b.so", "SOCKSIFY_PROXY=socks5h://127.0.0.1:9"]);
        let child: Vec<&[u8]> = vec![b"LD_PRELOAD=/x/libsocksify.so", b"SOCKSIFY_PROXY=mine"];
        let env: Vec<String> = c.for_supervisor(&child).into_iter().map(|e| String::from_utf8(e).unwrap()).collect();
        assert_eq!(env, ["SOCKSIFY_PROXY=mine"]);
    }

    #[test]
    fn additions_name_what_was_missing() {
        let c = carried(&["SOCKSIFY_LOG=info"]);
        let child: Vec<&[u8]> = vec![b"LD_PRELOAD=/lib/o.so"];
        assert_eq!(c.additions(&child).unwrap().names(), ["LD_PRELOAD", "SOCKSIFY_LOG"]);
    }
}
