#!/usr/bin/env python3
"""Print the scalars of TensorBoard event files as `tag,step,value` lines.

Pure Python (struct + a CRC-32C written out here), so it needs neither TensorFlow nor the
tensorboard package. Every record's length and data CRCs are verified; a bad or truncated
record is an error (exit status 1) naming the file and byte offset.

    python3 scripts/read_tfevents.py runs/x/tb/events.out.tfevents.*
"""
import struct
import sys


def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    """Yields each record's data after checking both CRCs."""
    with open(path, "rb") as f:
        blob = f.read()
    offset = 0
    while offset < len(blob):
        if offset + 12 > len(blob):
            raise ValueError(f"{path}: truncated record header at byte {offset}")
        header = blob[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[offset + 8:offset + 12])
        if length_crc != masked_crc32c(header):
            raise ValueError(f"{path}: bad length CRC at byte {offset}")
        start = offset + 12
        end = start + length
        if end + 4 > len(blob):
            raise ValueError(f"{path}: truncated record data at byte {offset}")
        data = blob[start:end]
        (data_crc,) = struct.unpack("<I", blob[end:end + 4])
        if data_crc != masked_crc32c(data):
            raise ValueError(f"{path}: bad data CRC at byte {offset}")
        yield data
        offset = end + 4


def _varint(buf, pos):
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse_fields(buf):
    """Protobuf wire format -> list of (field number, wire type, raw value)."""
    fields = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = buf[pos:pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos:pos + length]
            pos += length
        elif wire == 5:
            value = buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire} for field {field}")
        fields.append((field, wire, value))
    return fields


def scalars(path):
    """Yields (tag, step, value) for every simple_value in the file, in order."""
    for data in read_records(path):
        step = 0
        summaries = []
        for field, _, value in parse_fields(data):
            if field == 2:  # Event.step (int64 varint, two's complement)
                step = value - (1 << 64) if value >= (1 << 63) else value
            elif field == 5:  # Event.summary
                summaries.append(value)
        for summary in summaries:
            for field, _, value in parse_fields(summary):
                if field != 1:  # Summary.value
                    continue
                tag, simple = None, None
                for vfield, _, vvalue in parse_fields(value):
                    if vfield == 1:
                        tag = vvalue.decode("utf-8")
                    elif vfield == 2:
                        (simple,) = struct.unpack("<f", vvalue)
                if tag is not None and simple is not None:
                    yield tag, step, simple


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        for path in argv[1:]:
            for tag, step, value in scalars(path):
                print(f"{tag},{step},{value:.9g}")
    except (OSError, ValueError) as error:
        print(f"read_tfevents: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
