"""Descriptor encoding against values from the Intel SDM's layout (vol. 3A §3.4.5)."""

from __future__ import annotations

import pytest

from minikvm.arch.x86.descriptors import (
    ACCESS_CODE_RING0,
    ACCESS_CODE_RING3,
    ACCESS_DATA_RING0,
    FLAGS_32BIT_4K,
    FLAGS_64BIT_CODE,
    Segment,
    decode_descriptor,
    encode_descriptor,
)


def test_flat_code_descriptor_has_the_well_known_encoding() -> None:
    # The flat 4 GiB ring-0 code segment every OS tutorial writes as 0x00CF9A000000FFFF.
    raw = encode_descriptor(0, 0xFFFFF, ACCESS_CODE_RING0, FLAGS_32BIT_4K)
    assert int.from_bytes(raw, "little") == 0x00CF9A000000FFFF
    assert int.from_bytes(encode_descriptor(0, 0xFFFFF, ACCESS_DATA_RING0, FLAGS_32BIT_4K), "little") \
        == 0x00CF92000000FFFF
    assert int.from_bytes(encode_descriptor(0, 0xFFFFF, ACCESS_CODE_RING0, FLAGS_64BIT_CODE), "little") \
        == 0x00AF9A000000FFFF


@pytest.mark.parametrize(("base", "limit", "access", "flags"), [
    (0x12345678, 0xABCDE, ACCESS_CODE_RING3, FLAGS_32BIT_4K),
    (0xFF000000, 0x00067, 0x89, 0x0),
    (0x00000000, 0xFFFFF, ACCESS_DATA_RING0, FLAGS_32BIT_4K),
])
def test_decode_inverts_encode(base: int, limit: int, access: int, flags: int) -> None:
    desc = decode_descriptor(encode_descriptor(base, limit, access, flags))
    assert (desc.base, desc.limit, desc.access, desc.flags) == (base, limit, access, flags)


def test_decoded_properties() -> None:
    code3 = decode_descriptor(encode_descriptor(0, 0xFFFFF, ACCESS_CODE_RING3, FLAGS_32BIT_4K))
    assert code3.present and code3.dpl == 3 and not code3.system and code3.effective_limit == 0xFFFFFFFF
    tss = decode_descriptor(encode_descriptor(0x1000, 0x67, 0x89, 0))
    assert tss.system and tss.type == 9 and tss.effective_limit == 0x67


def test_limit_must_fit() -> None:
    with pytest.raises(ValueError):
        encode_descriptor(0, 0x100000, ACCESS_CODE_RING0, 0)


def test_segment_from_descriptor_marks_accessed_and_sizes() -> None:
    seg = Segment.from_descriptor(0x08, decode_descriptor(
        encode_descriptor(0, 0xFFFFF, ACCESS_CODE_RING0, FLAGS_32BIT_4K)))
    assert seg.type == 0xB and seg.db and seg.g and not seg.l and seg.limit == 0xFFFFFFFF
    assert "32-bit" in seg.describe() and "code" in seg.describe()
    tss = Segment.from_descriptor(0x28, decode_descriptor(encode_descriptor(0x1000, 0x67, 0x8B, 0)))
    assert " TSS (busy) dpl=0" in tss.describe() and "-bit" not in tss.describe()  # D/B means nothing here
    real = Segment.real_mode(0x1234)
    assert real.base == 0x12340 and real.limit == 0xFFFF
