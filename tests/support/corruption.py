"""Ways a file's bytes get damaged (a cut write, flipped bits, an emptied or overwritten file), as
hypothesis strategies: what the property tests of every file a resumed job reads apply."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st


@dataclass(frozen=True)
class Corruption:
    """One damage, applied to any file's bytes: offsets are taken modulo the file's length."""

    kind: str  # "truncate", "flip", "empty" or "garbage"
    offsets: tuple[int, ...] = ()
    masks: tuple[int, ...] = ()  # for "flip": XORed into the byte at the offset of the same index
    garbage: bytes = b""

    def apply(self, data: bytes) -> bytes:
        if self.kind == "empty":
            return b""
        if self.kind == "garbage":
            return self.garbage
        if self.kind == "truncate":
            return data[: self.offsets[0] % len(data)]
        damaged = bytearray(data)
        for offset, mask in zip(self.offsets, self.masks, strict=True):
            damaged[offset % len(data)] ^= mask
        return bytes(damaged)


_OFFSETS = st.integers(min_value=0, max_value=2**31)


def _flips(count: int) -> st.SearchStrategy[Corruption]:
    return st.tuples(st.lists(_OFFSETS, min_size=count, max_size=count),
                     st.lists(st.integers(1, 255), min_size=count, max_size=count)).map(
        lambda pair: Corruption("flip", tuple(pair[0]), tuple(pair[1])))


def corruptions() -> st.SearchStrategy[Corruption]:
    """Truncation at any offset, 1 to 8 flipped bytes, an empty file, or random garbage."""
    return st.one_of(
        _OFFSETS.map(lambda offset: Corruption("truncate", (offset,))),
        st.integers(1, 8).flatmap(_flips),
        st.just(Corruption("empty")),
        st.binary(min_size=1, max_size=4096).map(lambda garbage: Corruption("garbage", garbage=garbage)),
    )
