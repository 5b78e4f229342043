//! The CPU reference's own checks: gradients against central differences, threads.

use super::*;
use crate::rng::Rng;

/// The whole network's analytic gradient against central differences, in f64: the
/// largest relative error over every parameter.
fn worst_gradient_error(arch: &Arch, mask: Option<Mask>) -> f64 {
    let pass = Pass { mask, threads: 2 };
    let p32 = arch.init(3);
    let params: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
    let mut rng = Rng::new(5, 9);
    let batch = 5;
    let x: Vec<f64> = (0..batch * arch.input())
        .map(|_| rng.uniform(-1.0, 1.0) as f64)
        .collect();
    let labels: Vec<u8> = (0..batch).map(|_| rng.below(10) as u8).collect();
    let (_, g) = loss_and_grad(arch, &params, &x, &labels, pass);
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for i in 0..params.len() {
        let mut p = params.clone();
        p[i] += h;
        let (lp, _) = loss_and_grad(arch, &p, &x, &labels, pass);
        p[i] -= 2.0 * h;
        let (lm, _) = loss_and_grad(arch, &p, &x, &labels, pass);
        let fd = (lp - lm) / (2.0 * h);
        let err = (fd - g[i]).abs() / (1e-6 + fd.abs().max(g[i].abs()));
        // A ReLU kink inside [p-h, p+h] would break the difference; with random data at
        // this scale that does not happen, and the check is strict everywhere else.
        worst = worst.max(err);
    }
    worst
}

#[test]
fn finite_difference_gradient_check() {
    let worst = worst_gradient_error(&Arch::mlp(13, &[9, 7], 10), None);
    assert!(worst < 1e-5, "largest relative gradient error {worst}");
}

/// Any list of layers, not only the tutorial's kind, walks forward and backward.
#[test]
fn finite_difference_gradient_check_of_any_list() {
    use crate::model::Layer;
    let lin = |inp, out| Layer::Linear { inp, out };
    let layers = vec![
        lin(13, 9),
        lin(9, 7),
        Layer::Relu,
        lin(7, 10),
        Layer::LogSoftmax,
    ];
    let arch = Arch::from_layers([13, 1, 1], layers).unwrap();
    let worst = worst_gradient_error(&arch, None);
    assert!(worst < 1e-5, "largest relative gradient error {worst}");
}

/// Every layer kind of the CNNs (Conv2d, MaxPool2d, Dropout2d, Flatten, Dropout) on odd
/// shapes, with the masks of one step drawn: the same masks in both differences.
#[test]
fn finite_difference_gradient_check_of_a_cnn() {
    use crate::model::{Conv2d as Conv, DropP, Layer::*};
    let (half, third) = (DropP::new(0.5).unwrap(), DropP::new(0.3).unwrap());
    let layers = vec![
        Conv2d(Conv::new(2, 3, 3)),
        MaxPool2d,
        Relu,
        Dropout2d(half),
        Conv2d(Conv::new(3, 4, 2)),
        Flatten,
        Linear { inp: 16, out: 12 },
        Relu,
        Dropout(third),
        Linear { inp: 12, out: 10 },
        LogSoftmax,
    ];
    let arch = Arch::from_layers([2, 9, 8], layers).unwrap();
    assert_eq!(arch.shapes()[4], [3, 3, 3]);
    let mask = Mask {
        seed: 4,
        step: 11,
        layer: 0,
    };
    let worst = worst_gradient_error(&arch, Some(mask));
    assert!(worst < 1e-5, "largest relative gradient error {worst}");
}

/// Every layer kind's twin, each as `Layer::examples` gives it, between a 1x1 convolution
/// (whose weight gradient needs the kind's input gradient) and a Linear head, with one step's
/// masks drawn.
#[test]
fn finite_difference_gradient_check_of_every_kind() {
    use crate::model::{Conv2d, Layer};
    for (layer, x @ [c, h, w]) in Layer::examples() {
        let out: usize = layer.output(x).unwrap().iter().product();
        let layers = vec![
            Layer::Conv2d(Conv2d::new(c, c, 1)),
            layer,
            Layer::Flatten,
            Layer::Linear { inp: out, out: 10 },
            Layer::LogSoftmax,
        ];
        let arch = Arch::from_layers([c, h, w], layers).unwrap();
        let mask = Mask {
            seed: 4,
            step: 11,
            layer: 0,
        };
        let worst = worst_gradient_error(&arch, Some(mask));
        assert!(
            worst < 1e-5,
            "{layer}: largest relative gradient error {worst}"
        );
    }
}

/// Strided and padded convolutions, whose taps fall in the padding and skip input rows.
#[test]
fn finite_difference_gradient_check_of_strided_padded_convolutions() {
    use crate::model::{Conv2d as Conv, Layer::*};
    let strided = |cin, cout, k, stride, pad| Conv {
        cin,
        cout,
        k,
        stride,
        pad,
    };
    let layers = vec![
        Conv2d(strided(2, 3, 3, 2, 1)),
        Relu,
        Conv2d(strided(3, 2, 2, 1, 1)),
        Flatten,
        Linear { inp: 40, out: 10 },
        LogSoftmax,
    ];
    let arch = Arch::from_layers([2, 7, 6], layers).unwrap();
    assert_eq!(arch.shapes()[1], [3, 4, 3]);
    assert_eq!(arch.shapes()[3], [2, 5, 4]);
    let worst = worst_gradient_error(&arch, None);
    assert!(worst < 1e-5, "largest relative gradient error {worst}");
}

/// `nn.Conv2d(1, 1, 3, stride=2, padding=1)` with weights of one and bias 0.5 on 1..9 in a
/// 3x3 image: each output is 0.5 plus the four inputs its window covers inside the image.
#[test]
fn a_padded_strided_convolution_by_hand() {
    use crate::cpu::conv::conv2d_forward;
    use crate::model::Conv2d;
    let conv = Conv2d {
        cin: 1,
        cout: 1,
        k: 3,
        stride: 2,
        pad: 1,
    };
    let x: Vec<f64> = (1..=9).map(f64::from).collect();
    let mut y = vec![0.0; 4];
    conv2d_forward(&x, (&[1.0; 9], &[0.5]), &mut y, ([1, 3, 3], 1), conv);
    assert_eq!(y, [12.5, 16.5, 24.5, 28.5]);
}

/// A convolution spreads its samples over threads: the same bits on any number of them.
#[test]
fn threads_change_no_bit() {
    let arch = Arch::cnn_small();
    let params = arch.init(5);
    let mut rng = Rng::new(6, 1);
    let x: Vec<f32> = (0..7 * 784).map(|_| rng.uniform(-1.0, 2.0)).collect();
    let labels: Vec<u8> = (0..7).map(|_| rng.below(10) as u8).collect();
    let mask = Some(Mask {
        seed: 3,
        step: 2,
        layer: 0,
    });
    let run = |threads| loss_and_grad(&arch, &params, &x, &labels, Pass { mask, threads });
    let one = run(1);
    for threads in [2, 3, 8] {
        assert_eq!(run(threads), one, "{threads} threads");
    }
}

#[test]
fn log_softmax_rows_sum_to_one() {
    let z = [1.0f32, 2.0, 3.0, -1000.0, 0.0, 1000.0];
    let lp = log_softmax(&z, 3);
    for row in lp.chunks(3) {
        let s: f32 = row.iter().map(|v| v.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
    assert!(lp.iter().all(|v| v.is_finite()));
}
