//! Where the fields leaktrace reads are in `runtime.g`, by Go version: read from DWARF when the
//! binary has it, and from this table for stripped binaries. The table is checked against the
//! DWARF of every installed Go version by `tests/goruntime.rs`
//! (`offset_table_matches_the_dwarf_of_every_installed_go`).

/// Byte offsets inside `runtime.g` (sub-structures already added in: `sched_sp` is
/// `g.sched` + `gobuf.sp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GOffsets {
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    pub atomicstatus: u64,
    pub goid: u64,
    pub waitsince: u64,
    pub waitreason: u64,
    /// Since Go 1.21.
    pub parent_goid: Option<u64>,
    pub gopc: u64,
    pub startpc: u64,
}

impl GOffsets {
    /// How many bytes of a g to read to see every field.
    pub fn read_len(&self) -> usize {
        let last = [
            self.stack_lo,
            self.stack_hi,
            self.sched_sp,
            self.sched_pc,
            self.sched_bp,
            self.atomicstatus,
            self.goid,
            self.waitsince,
            self.waitreason,
            self.parent_goid.unwrap_or(0),
            self.gopc,
            self.startpc,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        last as usize + 8
    }
}

/// Offsets for stripped binaries, by (major, minor) Go version. Only versions whose layout was
/// checked against a real binary's DWARF are listed: guessing a layout would read garbage.
pub fn table(minor: u32) -> Option<GOffsets> {
    TABLE.iter().find(|(m, _)| *m == minor).map(|(_, o)| *o)
}

/// Minor versions (of Go 1.x) in the table.
pub fn table_versions() -> impl Iterator<Item = u32> {
    TABLE.iter().map(|(m, _)| *m)
}

const TABLE: &[(u32, GOffsets)] = &[];
