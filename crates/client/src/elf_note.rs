//! Recognising a Go program by its ELF notes. Go's `net` package makes its
//! own `connect` system calls even in a dynamically linked (cgo) build, so
//! `LD_PRELOAD` cannot see them: the shim warns when it finds itself in
//! one. Every Go binary carries a note named `Go` of type 4 (the Go build
//! ID, section `.note.go.buildid`) in a loaded `PT_NOTE` segment, so it
//! can be read from memory without opening a file.

/// The Go linker's note type for the build ID (`ELF_NOTE_GOBUILDID_TAG`).
const GO_BUILD_ID: u32 = 4;

/// Whether the notes of one `PT_NOTE` segment (native byte order, 4-byte
/// aligned entries: name size, description size, type, name, description)
/// include Go's build ID. Malformed or truncated notes end the walk.
pub fn has_go_build_id(segment: &[u8]) -> bool {
    let word = |at: usize| segment.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let padded = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut at = 0;
    while let (Some(namesz), Some(descsz), Some(kind)) = (word(at), word(at + 4), word(at + 8)) {
        let name_at = at + 12;
        let Some(name) = segment.get(name_at..name_at.saturating_add(namesz)) else { return false };
        // Go writes the name padded, "Go\0\0" (size 4); "Go\0" is the ELF norm.
        if kind == GO_BUILD_ID as usize && (name == b"Go\0\0" || name == b"Go\0") {
            return true;
        }
        let Some(next) = padded(namesz).and_then(|n| padded(descsz).and_then(|d| name_at.checked_add(n)?.checked_add(d))) else {
            return false;
        };
        at = next;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((name.len() as u32).to_ne_bytes());
        out.extend((desc.len() as u32).to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(name);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend(desc);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn finds_the_go_build_id_after_other_notes() {
        let gnu = note(b"GNU\0", 3, &[7; 20]);
        let go = note(b"Go\0\0", 4, b"abc/def/ghi/jkl");
        assert!(has_go_build_id(&[gnu.clone(), go].concat()));
        assert!(!has_go_build_id(&gnu));
        assert!(has_go_build_id(&note(b"Go\0", 4, b"x")), "the unpadded name");
        assert!(!has_go_build_id(&note(b"Go\0\0", 1, b"x")), "another Go note type");
        assert!(!has_go_build_id(&note(b"Gox\0", 4, b"x")));
    }

    #[test]
    fn truncated_or_hostile_notes_end_the_walk() {
        let go = note(b"Go\0", 4, b"abc");
        for cut in 0..go.len() {
            // Cut inside the name: not found; cut in the description: the name was enough.
            assert_eq!(has_go_build_id(&go[..cut]), cut >= 15, "cut at {cut}");
        }
        let mut huge = note(b"GNU\0", 3, b"");
        huge[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(!has_go_build_id(&[huge, note(b"Go\0", 4, b"x")].concat()));
        let mut huge_desc = note(b"GNU\0", 3, b"");
        huge_desc[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(!has_go_build_id(&huge_desc));
    }
}
