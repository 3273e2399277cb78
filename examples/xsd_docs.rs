//! Writes COUNT bare bio v1 VerifyFingerprintRequest documents of about SIZE bytes into DIR,
//! for `make bench-xsd` (the same files go to `spocgw validate` and to `xmllint --schema`).
//!
//! cargo run --release --example xsd_docs -- DIR SIZE COUNT

use spocgw::sim::messages::{BioRequest, Finger, synthetic_image};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: xsd_docs DIR SIZE COUNT");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let size: usize = args[2].parse().expect("SIZE is a number of bytes");
    let count: usize = args[3].parse().expect("COUNT is a number");
    std::fs::create_dir_all(dir).expect("create DIR");
    // Six prints at most (2 chip + 4 live); base64 makes each image 4/3 larger.
    let prints = if size < 20_000 { 2 } else { 6 };
    let image = ((size.saturating_sub(1200)) * 3 / 4 / prints).clamp(512, 65_536);
    for i in 0..count {
        let mut b = BioRequest::matching(&format!("6f1c1c4e-3f0a-4d53-9a43-{i:012x}"), image);
        let seed = i as u32;
        let chip = if prints == 2 { 1 } else { 2 };
        b.chip = (0..chip)
            .map(|k| Finger {
                position: k as u8 + 1,
                format: "WSQ",
                data: synthetic_image("WSQ", seed + k as u32, image),
            })
            .collect();
        b.live = (0..prints - chip)
            .map(|k| Finger {
                position: k as u8 + 1,
                format: "WSQ",
                data: synthetic_image("WSQ", seed + 10 + k as u32, image),
            })
            .collect();
        std::fs::write(dir.join(format!("{i:05}.xml")), b.verify_fingerprint()).expect("write");
    }
}
