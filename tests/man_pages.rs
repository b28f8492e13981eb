//! The man pages cannot drift from the programs: every option that
//! `socksify -h` and `socksify-server --help` list is documented, as
//! `*OPTION*`, in its scdoc source (`scripts/socksify.1.scd`,
//! `crates/server/socksify-server.1.scd`), and every option a man page
//! documents is one the program knows.

mod common;

use common::*;
use std::collections::BTreeSet;

/// The options a usage text lists: the first word of an indented line
/// that starts with `-`.
fn options_in_help(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|l| l.strip_prefix("  ").map(str::trim_start))
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            // `-h, --help  this text`: the words up to the first without a comma.
            let mut names = Vec::new();
            for word in l.split_whitespace() {
                names.push(word.trim_end_matches(',').to_owned());
                if !word.ends_with(',') {
                    break;
                }
            }
            names
        })
        .filter(|o| o.len() > 1)
        .collect()
}

/// The options a man page documents: `*-x*`, `*--listen*` at the start of
/// a line (the OPTIONS list's entries).
fn options_in_man(scd: &str) -> BTreeSet<String> {
    scd.lines()
        .filter(|l| l.starts_with("*-"))
        .flat_map(|l| {
            l.split(", ")
                .filter_map(|part| part.strip_prefix('*')?.split('*').next().map(str::to_owned))
                .filter(|name| !name.contains(' ')) // prose that starts a line with an example
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_same(program: &str, help: &str, man_path: &str) {
    let man = std::fs::read_to_string(repo_root().join(man_path)).expect("read the man page source");
    let (in_help, in_man) = (options_in_help(help), options_in_man(&man));
    assert!(in_help.len() >= 8, "{program}: the usage text was not understood: {in_help:?}");
    let undocumented: Vec<_> = in_help.difference(&in_man).collect();
    let unknown: Vec<_> = in_man.difference(&in_help).collect();
    assert!(undocumented.is_empty(), "{program}: options missing from {man_path}: {undocumented:?}");
    assert!(unknown.is_empty(), "{program}: {man_path} documents options the program does not list: {unknown:?}");
}

#[test]
fn the_wrapper_man_page_documents_exactly_its_options() {
    let out = Run::plain(wrapper_path()).arg("-h").run();
    out.assert_success();
    assert_same("socksify", &out.stdout, "scripts/socksify.1.scd");
}

#[test]
fn the_server_man_page_documents_exactly_its_options() {
    let out = Run::plain(server_path()).arg("--help").run();
    out.assert_success();
    assert_same("socksify-server", &out.stdout, "crates/server/socksify-server.1.scd");
}
