//! RFC 9162 Merkle tree hashing over the audit records: leaf = H(0x00 || record),
//! node = H(0x01 || left || right), the tree head of n leaves split at the largest power of two
//! below n. The tree is kept as its peaks (perfect subtrees), so appending is O(log n) and the
//! head of the current size is a right fold of the peaks.

use aws_lc_rs::digest::{Context, SHA256};

pub type Hash = [u8; 32];

pub fn leaf_hash(record: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0x00]);
    c.update(record);
    to_hash(c.finish().as_ref())
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0x01]);
    c.update(left);
    c.update(right);
    to_hash(c.finish().as_ref())
}

fn to_hash(b: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(&b[..32]);
    h
}

/// The head of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    to_hash(aws_lc_rs::digest::digest(&SHA256, b"").as_ref())
}

/// An append-only tree kept as its peaks: (height, hash), largest first.
#[derive(Debug, Clone, Default)]
pub struct CompactTree {
    peaks: Vec<(u32, Hash)>,
    size: u64,
}

impl CompactTree {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The peaks, largest first: (height, hash). With the size they are all a tree needs to
    /// go on growing, which is what a retention anchor stores.
    pub fn peaks(&self) -> &[(u32, Hash)] {
        &self.peaks
    }

    /// A tree resumed from an anchor; None when the peaks do not fit the size.
    pub fn from_peaks(size: u64, peaks: Vec<(u32, Hash)>) -> Option<CompactTree> {
        let total: u64 = peaks.iter().map(|(h, _)| 1u64.checked_shl(*h).unwrap_or(0)).sum();
        let decreasing = peaks.windows(2).all(|w| w[0].0 > w[1].0);
        (total == size && decreasing).then_some(CompactTree { peaks, size })
    }

    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(h, left)) = self.peaks.last() {
            if h != node.0 {
                break;
            }
            self.peaks.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The tree head for the current size.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else { return empty_root() };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The Merkle tree hash of `leaves` (RFC 9162 section 2.1.1).
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The consistency proof from the tree of the first `m` leaves to the tree of all `leaves`
/// (RFC 9162 section 2.1.4.1); empty when `m` is 0 or all of them.
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Vec<Hash> {
    fn sub(m: usize, leaves: &[Hash], whole: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !whole {
                out.push(mth(leaves));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            sub(m, &leaves[..k], whole, out);
            out.push(mth(&leaves[k..]));
        } else {
            sub(m - k, &leaves[k..], false, out);
            out.push(mth(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    if m > 0 && m < leaves.len() {
        sub(m, leaves, true, &mut out);
    }
    out
}

/// Whether `proof` shows that the tree of size `first` with root `first_root` is a prefix of
/// the tree of size `second` with root `second_root` (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((start, rest)) = path.split_first() else { return false };
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *first_root && sr == *second_root && sn == 0
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(m, &leaves[..k], out);
            out.push(mth(&leaves[k..]));
        } else {
            path(m - k, &leaves[k..], out);
            out.push(mth(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    out
}

/// The largest power of two smaller than n (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// Recomputes the root from a leaf, its index, the tree size and the audit path
/// (RFC 9162 section 2.1.3.2).
pub fn root_from_proof(leaf: Hash, index: u64, size: u64, proof: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 { Some(r) } else { None }
}

pub fn hex(h: &Hash) -> String {
    crate::encoding::hex(h)
}

pub fn unhex(s: &str) -> Option<Hash> {
    crate::encoding::unhex_array(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn compact_tree_matches_the_recursive_definition_and_proofs_verify() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut t = CompactTree::default();
        for n in 0..leaves.len() {
            assert_eq!(t.root(), reference_root(&leaves[..n]), "size {n}");
            t.push(leaves[n]);
        }
        for size in [1usize, 2, 3, 7, 8, 13, 64, 70] {
            let root = reference_root(&leaves[..size]);
            for m in 0..=size {
                let proof = consistency_proof(&leaves[..size], m);
                let old = reference_root(&leaves[..m]);
                assert!(verify_consistency(m as u64, size as u64, &old, &root, &proof), "{m} -> {size}");
                // Another old root, or a proof with a flipped bit, does not verify.
                let mut other = old;
                other[0] ^= 1;
                if m > 0 {
                    assert!(!verify_consistency(m as u64, size as u64, &other, &root, &proof), "{m} -> {size}");
                }
                if let Some(p) = proof.clone().first_mut() {
                    let mut bad = proof.clone();
                    p[0] ^= 1;
                    bad[0] = *p;
                    assert!(!verify_consistency(m as u64, size as u64, &old, &root, &bad), "{m} -> {size}");
                }
            }
            for i in 0..size {
                let proof = inclusion_proof(&leaves[..size], i);
                assert_eq!(root_from_proof(leaves[i], i as u64, size as u64, &proof), Some(root), "{i}/{size}");
                let mut bad = proof.clone();
                if let Some(p) = bad.first_mut() {
                    p[0] ^= 1;
                    assert_ne!(root_from_proof(leaves[i], i as u64, size as u64, &bad), Some(root));
                }
            }
        }
    }
}
