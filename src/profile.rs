//! Per-kernel GPU time over the steps profiled (`bench --profile`, `train --profile`).

/// GPU time per kernel, summed over the steps profiled.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// (kernel label, calls, total nanoseconds), in the order of the step.
    pub kernels: Vec<(String, u64, f64)>,
    pub steps: u64,
}

impl Profile {
    pub fn add(&mut self, label: &str, ns: f64) {
        match self.kernels.iter_mut().find(|k| k.0 == label) {
            Some(k) => {
                k.1 += 1;
                k.2 += ns;
            }
            None => self.kernels.push((label.to_string(), 1, ns)),
        }
    }

    pub fn total_ns(&self) -> f64 {
        self.kernels.iter().map(|k| k.2).sum()
    }

    /// A fixed-width table: kernel, calls, total ms, mean µs per call, share of the GPU time.
    pub fn table(&self) -> String {
        let total = self.total_ns();
        let row = |label: &str, calls: u64, ns: f64, share: f64| {
            let mean = ns / 1e3 / calls.max(1) as f64;
            format!(
                "{label:<32} {calls:>7} {:>10.1} {mean:>10.1} {share:>6.1}%\n",
                ns / 1e6
            )
        };
        let mut out = format!(
            "{:<32} {:>7} {:>10} {:>10} {:>7}\n",
            "kernel", "calls", "total ms", "mean us", "share"
        );
        for (label, calls, ns) in &self.kernels {
            out += &row(label, *calls, *ns, 100.0 * ns / total.max(1e-9));
        }
        out + &row("one step", self.steps, total, 100.0)
    }
}
