"""Damage an HDF5 file or a torch.save archive on disk the way a bad sector or a faulty copy
would."""

import struct
import zipfile

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


def flip_a_bit_of_a_zip_entry(path, suffix: str = "/data/0") -> str:
    """Flip one bit in the middle of the first entry of the zip archive ``path`` whose name ends
    with ``suffix`` (stored uncompressed, as torch.save writes), in place; return its name. Its
    local header is 30 bytes, then its name and extra field."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "r+b") as raw:
        raw.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", raw.read(4))
        where = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
        raw.seek(where)
        byte = raw.read(1)[0]
        raw.seek(where)
        raw.write(bytes([byte ^ 0x40]))
    return info.filename
