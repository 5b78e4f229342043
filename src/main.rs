//! The command line: `mnist-wgpu train`, `eval`, `selftest`, `predict`, `adapters`, `bench`,
//! `serve`;
//! see `src/cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::args::{Interrupted, UsageError};

#[derive(Parser)]
#[command(
    version,
    about = "Train the PyTorch MNIST tutorial's MLP with hand-written WGSL kernels through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Train the model on MNIST, report the test accuracy and save the weights.
    Train(cli::train::args::TrainArgs),
    /// Evaluate a model file (ours or PyTorch's) on the MNIST test set.
    Eval(cli::eval::EvalArgs),
    /// Check every kernel against the CPU reference on this machine's adapter.
    Selftest(cli::selftest::SelftestArgs),
    /// Read the digit in each of your PNG or JPEG images.
    Predict(cli::predict::PredictArgs),
    /// List every adapter wgpu finds and mark the one --device auto picks.
    Adapters(cli::adapters::AdaptersArgs),
    /// Measure training and evaluation speed (and the per-kernel profile).
    Bench(cli::bench::BenchArgs),
    /// Serve the web page built by web/build.sh on 127.0.0.1 and print its URL.
    Serve(cli::serve::ServeArgs),
}

fn main() -> ExitCode {
    // Mesa's device-select layer connects to Wayland and X11 to sort devices, which prints
    // "XDG_RUNTIME_DIR is invalid or not set" on a headless machine. We pick the adapter
    // ourselves, so switch the layer off (its documented switch) unless the user set it.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    // Output piped into `head` and closed early ends the program quietly, as for any Unix
    // tool, instead of a panic in println!.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // The CPU backend allocates and frees its tensors every step (tens of MB for the cnn
    // recipe). glibc hands every freed block above its mmap threshold back to the kernel, so
    // the next step faults the same pages in again, zeroed: a third of cnn's CPU step. Blocks
    // up to 32 MiB stay in the heap, and its top is trimmed past 256 MiB only: cnn's CPU step
    // went from 75 to 48 ms (docs/PERFORMANCE.md). The step runs on a thread of rayon's pool,
    // and a thread's own arena unmaps each of its heaps once it empties, whatever the
    // thresholds: one arena keeps every thread's blocks in the one heap they govern.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: tuning the allocator before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = match cli.command {
        Command::Train(args) => cli::train::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Selftest(args) => cli::selftest::run(args),
        Command::Predict(args) => cli::predict::run(args),
        Command::Adapters(args) => cli::adapters::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Serve(args) => cli::serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line, each cause once: an error whose message already
/// quotes its source (`{path}: cannot read: {source}`) does not print that source again.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}
