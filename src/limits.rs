//! What a run's models need, known before anything is allocated: their parameters in one
//! storage binding on the adapter, and their copies in host memory. What does not fit is
//! refused in one line that names the flag and the largest value that fits.

use crate::flags::hidden_string;
use crate::model::Arch;

/// A limit the models' parameters must fit: its size in bytes and how to name it.
pub struct Budget {
    pub bytes: u64,
    /// "the adapter's storage binding limit", "the host's available memory"
    pub what: String,
}

/// Checks that `models` models of `arch`, each needing `need(arch)` bytes, fit `budget`.
/// When one model is too large it names the widest `--hidden` of the same depth that fits;
/// when only the set is, how many models of this size fit.
pub fn fit(
    arch: &Arch,
    models: usize,
    need: impl Fn(&Arch) -> u64,
    budget: &Budget,
) -> Result<(), String> {
    let one = need(arch);
    if one.saturating_mul(models as u64) <= budget.bytes {
        return Ok(());
    }
    let (limit, params) = (size(budget.bytes), arch.param_count());
    let what = &budget.what;
    if one > budget.bytes {
        let depth = arch.linear_dims().len() - 1;
        let shaped = |w: usize| Arch::mlp(arch.input(), &vec![w; depth], arch.output());
        let widest = match depth {
            0 => 0,
            _ => largest(|w| need(&shaped(w)) <= budget.bytes),
        };
        let advice = match widest {
            0 => "no model of this input and output size fits".to_string(),
            w => format!(
                "the widest that fits is --hidden {}",
                hidden_string(&shaped(w))
            ),
        };
        return Err(format!(
            "--hidden {}: the model's {params} parameters need {} against {what} of {limit}; {advice}",
            hidden_string(arch),
            size(one),
        ));
    }
    let fit = budget.bytes / one;
    Err(format!(
        "--seeds, --lr, --momentum: {models} models of {params} parameters need {} against {what} \
         of {limit}; at most {fit} models of this size fit in one run",
        size(one.saturating_mul(models as u64)),
    ))
}

/// The largest w >= 1 for which `fits(w)` holds, `fits` being monotone; 0 when none does.
fn largest(fits: impl Fn(usize) -> bool) -> usize {
    if !fits(1) {
        return 0;
    }
    let (mut lo, mut hi) = (1usize, 2usize);
    while hi <= usize::MAX / 4 && fits(hi) {
        (lo, hi) = (hi, hi * 2);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match fits(mid) {
            true => lo = mid,
            false => hi = mid,
        }
    }
    lo
}

/// Bytes as a person reads them: `128 MiB`, `17.4 GiB`.
pub fn size(bytes: u64) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    match mib {
        m if m >= 1024.0 => format!("{:.1} GiB", m / 1024.0),
        m if m >= 10.0 => format!("{m:.0} MiB"),
        m => format!("{m:.2} MiB"),
    }
}

/// The host's available memory (Linux's MemAvailable), None where it cannot be read.
pub fn host_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(a: &Arch) -> u64 {
        a.param_count() as u64 * 4
    }

    const BINDING: u64 = 128 << 20;

    fn binding() -> Budget {
        Budget {
            bytes: BINDING,
            what: "the adapter's storage binding limit".into(),
        }
    }

    #[test]
    fn a_model_too_wide_is_told_the_widest_that_fits() {
        let arch = Arch::mlp(784, &[65536, 65536], 10);
        let e = fit(&arch, 1, f32s, &binding()).unwrap_err();
        assert!(e.starts_with("--hidden 65536,65536: "), "{e}");
        let w: usize = e.rsplit(',').next().unwrap().parse().unwrap();
        assert!(f32s(&Arch::mlp(784, &[w, w], 10)) <= BINDING, "{e}");
        assert!(f32s(&Arch::mlp(784, &[w + 1, w + 1], 10)) > BINDING, "{e}");
        assert!(e.contains("128 MiB"), "{e}");
    }

    #[test]
    fn a_set_too_large_is_told_how_many_models_fit() {
        // 784-8000-10: 6,360,010 parameters, 25.4 MB each: five fit in 128 MiB, six do not.
        let arch = Arch::mlp(784, &[8000], 10);
        assert!(fit(&arch, 5, f32s, &binding()).is_ok());
        let e = fit(&arch, 6, f32s, &binding()).unwrap_err();
        assert!(e.starts_with("--seeds, --lr, --momentum: 6 models"), "{e}");
        assert!(
            e.ends_with("at most 5 models of this size fit in one run"),
            "{e}"
        );
        assert!(fit(&Arch::mlp(784, &[128, 64], 10), 256, f32s, &binding()).is_ok());
    }

    #[test]
    fn largest_finds_the_edge() {
        assert_eq!(largest(|w| w <= 1000), 1000);
        assert_eq!(largest(|w| w <= 1), 1);
        assert_eq!(largest(|_| false), 0);
        assert_eq!(size(BINDING), "128 MiB");
    }
}
