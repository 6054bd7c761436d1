"""Damage an HDF5 file on disk the way a bad sector or a faulty copy would."""

import h5py


def flip_a_bit_of_chunk(path, name: str, index: int) -> None:
    """Flip one bit in the middle of dataset ``name``'s stored chunk ``index``, in place."""
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(index)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset + info.size // 2)
        byte = raw.read(1)[0]
        raw.seek(info.byte_offset + info.size // 2)
        raw.write(bytes([byte ^ 0x10]))


def flip_a_bit_of_the_first_chunk(path, name: str) -> None:
    """Flip one bit in the middle of dataset ``name``'s first stored chunk, in place."""
    flip_a_bit_of_chunk(path, name, 0)
