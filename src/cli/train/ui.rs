//! What `train` shows while it runs: a progress bar on a terminal, one line per epoch, and
//! Ctrl-C, which finishes the submission in flight and asks for a checkpoint.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use mnist_wgpu::recorder::Recorder;
use mnist_wgpu::train::{Backend, EpochReport, Observer, Progress};

/// Set by Ctrl-C; the loop checks it after every interval.
static STOP: AtomicBool = AtomicBool::new(false);

pub fn install_interrupt_handler() {
    // A second Ctrl-C quits at once; the checkpoint of the last finished epoch stays valid.
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing the current submission, then writing a checkpoint \
             (Ctrl-C again to quit at once)"
        );
    });
}

/// What the run prints while it trains; the recorder writes the checkpoint and the files.
pub struct Ui {
    pub quiet: bool,
    pub bar: Option<indicatif::ProgressBar>,
    pub recorder: Recorder,
    pub last: Option<EpochReport>,
}

impl Ui {
    fn bar_for(&mut self, p: &Progress<'_>) -> &indicatif::ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(p.steps as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "Epoch {prefix} [{bar:32}] {pos:>5}/{len} steps | {msg} | eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(p.epoch.to_string());
            bar
        })
    }
}

#[async_trait::async_trait(?Send)]
impl Observer for Ui {
    async fn progress(&mut self, p: &Progress<'_>) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let (running, rate) = (p.running_loss(), p.images_per_s());
        let bar = self.bar_for(p);
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {running:.4} | {:5.1}k img/s", rate / 1000.0));
    }

    async fn epoch_done(&mut self, backend: &mut dyn Backend, r: &EpochReport) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            println!("{}", r.line());
        }
        self.recorder.epoch_done(backend, r).await?;
        self.last = Some(r.clone());
        Ok(())
    }

    fn interrupted(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}
