//! The GPU's errors, one line each, with what to do about them where the user sees them: on
//! the command line, its flags; in the web page, its buttons and URL parameters.

const NO_ADAPTER_HINT: &str = "install a Vulkan driver (on Debian/Ubuntu without a GPU: \
`apt-get install mesa-vulkan-drivers` gives the lavapipe software adapter), check \
WGPU_BACKEND / WGPU_ADAPTER_NAME, or use --device cpu";

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found ({searched}); {NO_ADAPTER_HINT}")]
    NoAdapter { searched: String },
    #[error("no WebGPU adapter in this browser ({0})")]
    NoWebGpu(String),
    #[error("no adapter's name contains {name:?}; found: {found}")]
    NoMatch { name: String, found: String },
    #[error("opening a device on {adapter} failed: {source}")]
    Device {
        adapter: String,
        source: wgpu::RequestDeviceError,
    },
    #[error("{}{kernels}: {adapter} has {why} for them; {}", Advice::of(*browser).flag, Advice::of(*browser).kernels)]
    Kernels {
        adapter: String,
        kernels: &'static str,
        why: &'static str,
        /// In the web page, where the advice is the page's, not the command line's.
        browser: bool,
    },
    #[error("the GPU failed while {what} on {adapter}: {message}; {}", Advice::of(*browser).failed)]
    Failed {
        adapter: String,
        what: String,
        message: String,
        browser: bool,
    },
}

/// What a GPU error tells the user to do: on the command line, in its flags; in the web page,
/// in its buttons and URL parameters.
struct Advice {
    flag: &'static str,
    kernels: &'static str,
    failed: &'static str,
}

impl Advice {
    fn of(browser: bool) -> Advice {
        match browser {
            false => Advice {
                flag: "--kernels ",
                kernels: "`mnist-wgpu adapters` lists the kernels it can run",
                failed: "run `mnist-wgpu selftest` to check this adapter, or use --device cpu",
            },
            true => Advice {
                flag: "kernels=",
                kernels: "leave kernels= out of the address to let the page choose",
                failed: "press Check kernels to check this adapter (or open the page with \
                         ?selftest=1), or reload it with kernels=plain in the address",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GpuError;

    /// A GPU error tells a page user what the page offers, a command-line user the flags.
    #[test]
    fn advice_follows_where_the_error_is_shown() {
        let failed = |browser| GpuError::Failed {
            adapter: "a".into(),
            what: "training".into(),
            message: "lost".into(),
            browser,
        };
        let native = failed(false).to_string();
        let page = failed(true).to_string();
        assert!(native.contains("mnist-wgpu selftest") && native.contains("--device cpu"));
        assert!(page.contains("Check kernels") && page.contains("kernels=plain"));
        assert!(!page.contains("--"), "{page}");
        let refused = |browser| GpuError::Kernels {
            adapter: "a".into(),
            kernels: "subgroup",
            why: "no subgroups",
            browser,
        };
        assert!(
            refused(false)
                .to_string()
                .starts_with("--kernels subgroup: a has")
        );
        let page = refused(true).to_string();
        assert!(
            page.starts_with("kernels=subgroup: a has") && !page.contains("--"),
            "{page}"
        );
    }
}
