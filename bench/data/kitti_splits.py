"""The common KITTI 2D object train/val split (Chen et al., 3DOP, NIPS 2015): 3,712 / 3,769 of the 7,481
training images, split so that no drive is in both halves.

KITTI's test labels are private, so every paper that reports KITTI numbers on its own runs uses a split of
``training/``; this one (the ``ImageSets/{train,val}.txt`` shipped with MV3D, SECOND, OpenPCDet, ...) is the
de facto standard and the default when a root has no ``ImageSets/`` of its own. The val mask is stored as
bits (bit ``i`` of byte ``i // 8`` set when image ``i`` is in val); train is the rest. The SHA-256 digests of
the two lists written as one zero-padded six-digit id per line are checked by the tests.
"""

from __future__ import annotations

KITTI_TRAINING_IMAGES = 7481
TRAIN_SHA256 = "e85ce0142be11c7e4196fd7b79a8bc8c2cefdd6fe754ac61fef8d421e37aba5c"
VAL_SHA256 = "6e2394d97c866c3af1ffb049f828abdf3d5b707d9575d16885fd0de87b72b0c8"
_VAL_MASK_HEX = (
    "7681b89baa8535ec06700266441d7054d19a889382e7e0dcbd9a3885e5bcc41fd076c31a2e62ba8d9bb3b1cebd6736ef96ff"
    "9ee358783049fd8a30fb63fa8d75a99225e196ccd31ba0f00813fc1c579cb4851e68a41c585d1570a64b33d615e27b4c4049"
    "ff1e8984609b57c820fe32620aa9394d1ddc3153da6ea99780c4fd6c0ea84cec84fe7858c36b9d5ea9fabd7b4f8c30dfb8cf"
    "c8606757bd7efabafe0fd2da811f64007e4b4f9b28d073bd68809c2989e96e0da4a460a383629836f6a1472e29b562cbfe35"
    "6da42baa0ea944554f081d626aefe7c63270e6493459f50c2c9761d6930851f9ed3869f335162380f97bf30685c112dea7b8"
    "177d6a3a7c7c574790dee66af0984b9b8d5f80c36b27ca1a12c7821d338768cd5604b1ddfc9c5d8ca156371fb2e416d58fe3"
    "30c8dc338745c4f600f64895daa790635fbc14713cd7b247c45fb028d65a7328a3242e63f449ec2bf787523f6bbbb0802c36"
    "73de14dc92f321a50cf82bfef192b430c5429bea5f484f93aefb0c48eb4fccf5658e168545e96c55d0ea635792a6d4fa48a5"
    "9c4c6bb79385dc0a26190b917557db3c0ca6cc6bf0a50806befe1f6a760d882721ef449f9fc385a8938f8849e70c69d01100"
    "b34bf5e90fa8b26cb8f01c1fc09ad948810fdc1a1c8a6e1846b55b505c2c82501965c76b5c6e2a1c59588656503696720551"
    "9f0f211c57278ba813a5ae9a35fbf2771fd7707f1ff900fa18e4e6f015a14ecf99c06837efbcaec5da86d772039d67829373"
    "dec0fc67ee995455620def6e6190b2c35f70b832c46765bad0089f546557919f163e83edfb1ef67e77d4de17935c27c3d8a1"
    "d1ec63e289481ffc990ea2b9c52b64d3dbe43dd64d40a976de16e52a157523f6c75bef47e4a07203b7a1bd2b7aded579f3e4"
    "42606e6c36578a51989e95120fb9db2ee7e76a80699b2ee60030a0c0ec24ba373c8eb7d6c204c20c28595587f9613c737d18"
    "0f248fc2ce0d365d3133a9829c3d27b08bb98f242d00c24f16eb187c2c840bd00b21d2ae72b8eef7eea80c39492e966417b4"
    "2e7781fdd6fe55f6dc6ce8a1d74c7cee24099515aa23434e5c14a5483843d106846e5fc50172063d1678dcb33e511f3a961e"
    "e88e930fbe777840736f5e29871ebd33fe52b05a2b47e7543b1c788437778a8e1d6df464f0a5e08f697a268bdfb73df6a675"
    "d9b94d30339af6d55497b68abe5c262405c7539e15297668a569ddc9fc678cb3a9bad5bf8b9460a925bc0d27647e53d708c4"
    "b7d52a6a4bd5b0758eef995fd8e1c8ec0ecbeb8311caf3a378aebef945bea527c57d6a01"
)


def default_split(split: str) -> list[str]:
    """The ids (``"000000"``...) of the 3DOP ``train`` or ``val`` split, in ascending order."""
    if split not in ("train", "val"):
        raise ValueError(f"the bundled KITTI split has 'train' and 'val', not {split!r}")
    mask = bytes.fromhex(_VAL_MASK_HEX)
    in_val = [bool(mask[i // 8] >> (i % 8) & 1) for i in range(KITTI_TRAINING_IMAGES)]
    return [f"{i:06d}" for i, val in enumerate(in_val) if val == (split == "val")]
