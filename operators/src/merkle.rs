//! RFC 6962 / RFC 9162 Merkle trees over a tenant's leaf hashes: roots, compact ranges for
//! appending in O(log n), inclusion and consistency proofs and their verification.
//!
//! Leaf hashes are `SHA-256(0x00 || canonical event)` (see [`crate::hashing`]); interior
//! nodes are `SHA-256(0x01 || left || right)`; the root of the empty tree is `SHA-256("")`.

use sha2::{Digest, Sha256};

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x01 || left || right)`.
pub fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The Merkle tree hash (MTH) of `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The roots of the perfect subtrees covering `0..size`, largest first: enough to append
/// leaves and compute the root without the leaves themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    roots: Vec<Hash>,
}

impl CompactRange {
    /// The empty range.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn append(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        // Merge equal-sized subtrees: one merge per trailing one bit of the old size.
        while size & 1 == 1 {
            // Panic: a set bit in `size` means a subtree root is present for it.
            let left = self.roots.pop().expect("one root per set bit");
            hash = node(&left, &hash);
            size >>= 1;
        }
        self.roots.push(hash);
        self.size += 1;
    }

    /// The root of the tree over every appended leaf.
    pub fn root(&self) -> Hash {
        let mut iter = self.roots.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(last) => iter.fold(*last, |acc, left| node(left, &acc)),
        }
    }

    /// Serializes as `size:hex,hex,…`.
    pub fn encode(&self) -> String {
        let roots: Vec<String> = self.roots.iter().map(hex::encode).collect();
        format!("{}:{}", self.size, roots.join(","))
    }

    /// Parses [`CompactRange::encode`] output.
    pub fn decode(s: &str) -> Option<Self> {
        let (size, roots) = s.split_once(':')?;
        let size: u64 = size.parse().ok()?;
        let roots: Vec<Hash> = if roots.is_empty() {
            Vec::new()
        } else {
            roots
                .split(',')
                .map(|h| {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(h, &mut out).ok().map(|()| out)
                })
                .collect::<Option<_>>()?
        };
        (roots.len() == size.count_ones() as usize).then_some(CompactRange { size, roots })
    }
}

/// The audit path (RFC 6962 `PATH(m, D[n])`) of leaf `index` in the tree over `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(m, &leaves[..k], out);
            out.push(root(&leaves[k..]));
        } else {
            path(m - k, &leaves[k..], out);
            out.push(root(&leaves[..k]));
        }
    }
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    Some(out)
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// The consistency proof (RFC 6962 `PROOF(m, D[n])`) that the tree of the first `m` leaves is
/// a prefix of the tree over all `leaves`.
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Option<Vec<Hash>> {
    fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !complete {
                out.push(root(leaves));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(m, &leaves[..k], complete, out);
            out.push(root(&leaves[k..]));
        } else {
            subproof(m - k, &leaves[k..], false, out);
            out.push(root(&leaves[..k]));
        }
    }
    if m == 0 || m > leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    subproof(m, leaves, true, &mut out);
    Some(out)
}

/// Verifies a consistency proof between sizes `m <= n` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(m: u64, n: u64, root_m: &Hash, root_n: &Hash, proof: &[Hash]) -> bool {
    if m == 0 || m > n {
        return false;
    }
    if m == n {
        return proof.is_empty() && root_m == root_n;
    }
    let mut proof = proof.to_vec();
    if m.is_power_of_two() {
        proof.insert(0, *root_m);
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (m - 1, n - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node(c, &fr);
            sr = node(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *root_m && sr == *root_n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| crate::hashing::leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn compact_range_matches_recursive_root() {
        let all = leaves(70);
        let mut range = CompactRange::new();
        assert_eq!(range.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            range.append(*leaf);
            assert_eq!(range.root(), root(&all[..=i]), "size {}", i + 1);
            assert_eq!(CompactRange::decode(&range.encode()), Some(range.clone()));
        }
    }

    #[test]
    fn rfc6962_known_root() {
        // Two leaves: MTH = node(leaf0, leaf1).
        let l = leaves(2);
        assert_eq!(root(&l), node(&l[0], &l[1]));
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn inclusion_proofs_verify_and_reject_tampering() {
        for n in 1..=33 {
            let all = leaves(n);
            let r = root(&all);
            for i in 0..n {
                let proof = inclusion_proof(&all, i).unwrap();
                assert!(
                    verify_inclusion(&all[i], i as u64, n as u64, &proof, &r),
                    "{i}/{n}"
                );
                let other = (i + 1) % n;
                if other != i {
                    assert!(!verify_inclusion(
                        &all[other],
                        i as u64,
                        n as u64,
                        &proof,
                        &r
                    ));
                }
                let wrong_root = node(&r, &r);
                assert!(!verify_inclusion(
                    &all[i],
                    i as u64,
                    n as u64,
                    &proof,
                    &wrong_root
                ));
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_reject_tampering() {
        let all = leaves(40);
        for n in 1..=40 {
            let rn = root(&all[..n]);
            for m in 1..=n {
                let rm = root(&all[..m]);
                let proof = consistency_proof(&all[..n], m).unwrap();
                assert!(
                    verify_consistency(m as u64, n as u64, &rm, &rn, &proof),
                    "{m}->{n}"
                );
                if m < n {
                    let wrong = root(&leaves(m + 1)[1..]);
                    assert!(!verify_consistency(m as u64, n as u64, &wrong, &rn, &proof));
                }
            }
        }
    }
}
