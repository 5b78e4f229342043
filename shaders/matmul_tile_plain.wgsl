
// ---- inner loop for adapters without subgroups (e.g. the GL backend) ----
//
// Every invocation reads the A values it needs itself; the workgroup size stays an override.

override LANES: u32 = 8u;

fn tile(m0: u32, col4: u32, li: u32, kk: u32, which: u32) -> Tile {
    var t: Tile;
    for (var k = 0u; k < kk; k++) {
        let av = a_rows(m0, k, which);
        t.rowsum += av;
        fma_rows(&t, av, b_row(k, col4, which));
    }
    return t;
}
