//! Recognising a Go program by its ELF notes, and what `LD_PRELOAD` can
//! do with an executable file ([`classify`], for the exec hooks). Go's `net` package makes its
//! own `connect` system calls even in a dynamically linked (cgo) build, so
//! `LD_PRELOAD` cannot see them: the shim warns when it finds itself in
//! one. Every Go binary carries a note named `Go` of type 4 (the Go build
//! ID, section `.note.go.buildid`) in a loaded `PT_NOTE` segment, so it
//! can be read from memory without opening a file.

/// What the dynamic loader makes of an executable file, as far as
/// `LD_PRELOAD` is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executable {
    /// Not an ELF file (a `#!` script, whose interpreter the exec hook of
    /// the new process sees) or unreadable: the exec goes on as asked.
    Other,
    /// Dynamically linked for this machine: `LD_PRELOAD` reaches it.
    Preloadable,
    /// No program interpreter: `LD_PRELOAD` never reaches it.
    Static,
    /// A Go program: its own system calls bypass `LD_PRELOAD`.
    Go,
    /// Another ELF class, byte order or machine: the loader would skip a
    /// library built for ours.
    Foreign,
}

impl Executable {
    /// Whether `LD_PRELOAD` would see its connections.
    pub fn needs_supervisor(self) -> bool {
        matches!(self, Executable::Static | Executable::Go | Executable::Foreign)
    }
}

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
/// Notes longer than this are not read (Go's is about 100 bytes).
const MAX_NOTES: usize = 4096;

/// Classifies an executable from its first bytes (`head`, at least the
/// ELF header) and `read_at(offset, len)` for the rest, judged for this
/// machine (`machine`, `e_machine`; 64-bit little-endian, as the shim).
pub fn classify(head: &[u8], machine: u16, mut read_at: impl FnMut(u64, usize) -> Option<Vec<u8>>) -> Executable {
    if head.len() < 64 || head[..4] != *b"\x7fELF" {
        return Executable::Other;
    }
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], at: usize| b.get(at..at + 4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
    let u64_at = |b: &[u8], at: usize| b.get(at..at + 8).map(|x| u64::from_le_bytes(x.try_into().unwrap_or([0; 8])));
    // ELFCLASS64, ELFDATA2LSB, this machine.
    if head[4] != 2 || head[5] != 1 || u16_at(head, 18) != Some(machine) {
        return Executable::Foreign;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(head, 32), u16_at(head, 54), u16_at(head, 56)) else {
        return Executable::Other;
    };
    let size = phentsize as usize * phnum as usize;
    if phentsize < 56 || size == 0 {
        return Executable::Static; // no program headers: no interpreter either
    }
    let headers = match phoff.checked_add(size as u64) {
        Some(end) if end <= head.len() as u64 => head[phoff as usize..end as usize].to_vec(),
        _ => match read_at(phoff, size) {
            Some(h) if h.len() == size => h,
            _ => return Executable::Other,
        },
    };
    let mut interp = false;
    let mut go = false;
    for h in headers.chunks_exact(phentsize as usize) {
        match u32_at(h, 0) {
            Some(PT_INTERP) => interp = true,
            Some(PT_NOTE) if !go => {
                let (Some(offset), Some(len)) = (u64_at(h, 8), u64_at(h, 32)) else { continue };
                let len = (len as usize).min(MAX_NOTES);
                go = read_at(offset, len).is_some_and(|notes| has_go_build_id(&notes));
            }
            _ => {}
        }
    }
    match (go, interp) {
        (true, _) => Executable::Go,
        (false, true) => Executable::Preloadable,
        (false, false) => Executable::Static,
    }
}

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

    const X86_64: u16 = 62;

    /// An ELF64 file: header, program headers of the given types (a note
    /// segment holds `notes`), then the notes.
    fn elf(machine: u16, types: &[u32], notes: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(types.len() as u16).to_le_bytes());
        let notes_at = 64 + 56 * types.len() as u64;
        for &t in types {
            let mut h = vec![0u8; 56];
            h[..4].copy_from_slice(&t.to_le_bytes());
            h[8..16].copy_from_slice(&notes_at.to_le_bytes());
            h[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
            f.extend(h);
        }
        f.extend(notes);
        f
    }

    fn classify_file(file: &[u8], head_len: usize) -> Executable {
        let read_at = |at: u64, len: usize| file.get(at as usize..(at as usize).checked_add(len)?).map(<[u8]>::to_vec);
        classify(&file[..head_len.min(file.len())], X86_64, read_at)
    }

    #[test]
    fn tells_dynamic_static_go_and_foreign_programs_apart() {
        let go = note(b"Go\0\0", 4, b"id");
        let gnu = note(b"GNU\0", 3, b"id");
        for head in [64, 4096] {
            assert_eq!(classify_file(&elf(X86_64, &[6, 3, 4], &gnu), head), Executable::Preloadable);
            assert_eq!(classify_file(&elf(X86_64, &[6, 4], &gnu), head), Executable::Static);
            assert_eq!(classify_file(&elf(X86_64, &[6, 3, 4], &go), head), Executable::Go, "a cgo build");
            assert_eq!(classify_file(&elf(X86_64, &[4], &go), head), Executable::Go, "a static Go build");
            assert_eq!(classify_file(&elf(183, &[3], &gnu), head), Executable::Foreign, "aarch64 on x86_64");
        }
        let mut elf32 = elf(X86_64, &[3], &gnu);
        elf32[4] = 1;
        assert_eq!(classify_file(&elf32, 4096), Executable::Foreign);
        assert_eq!(classify_file(b"#!/bin/sh\necho hi\n", 4096), Executable::Other);
        assert!(Executable::Go.needs_supervisor() && Executable::Static.needs_supervisor() && !Executable::Preloadable.needs_supervisor());
    }

    #[test]
    fn a_truncated_file_is_never_called_preloadable_by_mistake() {
        let file = elf(X86_64, &[6, 3, 4], &note(b"Go\0\0", 4, b"id"));
        for cut in 0..file.len() {
            let kind = classify_file(&file[..cut], 4096);
            assert!(kind != Executable::Preloadable || cut >= 64 + 56 * 3, "cut at {cut}: {kind:?}");
        }
    }

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
