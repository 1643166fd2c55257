"""The gateway's power-loss-safe reading buffer on flash (littlefs): an append-only log of
CRC-checked records in rotating segment files, batches with persistent sequence numbers whose
exact bytes are kept until the fleet acknowledges them. No MQTT, no clocks of its own.

Files in the log folder:
  sNNNNNNNN   segment: records [magic, kind, length u16, crc32 u32, payload]; a torn write
              leaves a bad tail, and reading stops there, so at most that record is lost.
              Each boot writes a new segment, never after a possibly torn tail; so does a
              write that failed (its readings stay in RAM and go into the new segment).
  bNNNNNNNNNNNN  one assigned batch: header, the encoded batch bytes, crc32. Written to a
              .tmp file and renamed (atomic on littlefs), deleted on the fleet's ack.
  state       boot counter, next seq, read cursor (segment, offset), dropped count, crc32;
              replaced atomically by rename. A crash between a batch file and the state is
              repaired at open from the batch file's own header.
"""

import gc
import os
import struct
from binascii import crc32

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAGIC = const(0xA5)
_KIND_READINGS = const(1)
_HDR = "<BBHI"  # magic, kind, payload length, crc32 of payload
_HDR_LEN = const(8)
_READING = "<IqBq"  # channel, ts_ms, kind (0 int, 1 float), value (int, or float bits)
_READING_LEN = const(21)
_PER_RECORD = const(48)  # readings per record: ~1 KB, the unit of reads and torn writes
_REC_MAX = _HDR_LEN + 2 + _PER_RECORD * _READING_LEN
_STATE = "<IIQIIIQQ"  # magic, boot, next_seq, cursor: segment, offset, skip; dropped, acked
_STATE_MAGIC = const(0x4C4F4731)
_BATCH = "<IQBIIIIQ"  # magic, seq, historical, end: segment, offset, skip; readings, created
_BATCH_MAGIC = const(0x42415431)
_BATCH_LEN = struct.calcsize(_BATCH)
# The codec writes batches into one buffer made at start, sized by the largest batch (grown in
# place if a batch needs more): on a fragmented heap a new block of a batch's size may not be
# found. Four SDM630s' readings take ~4 bytes each; the codec asks for room for a device's
# header and a timestamp varint per row on top.
_ENCODE_BASE = const(64)
_ENCODE_PER_READING = const(8)
# Readings per batch at most unless the settings say otherwise: two records. Buffers that
# grow with a batch are sized by it (each byte of them counts in full on a 32-bit board).
_BATCH_READINGS = const(96)


class LogError(Exception):
    """The log folder cannot be used; the message says what to check."""


class Batch:
    """An assigned batch: resend `payload` unchanged until ack(seq)."""

    def __init__(self, seq, historical, count, payload, created_ms):
        self.seq = seq
        self.historical = historical
        self.count = count
        self.payload = payload
        self.created_ms = created_ms


def _pack_value(buf, pos, channel, ts_ms, value):
    if isinstance(value, float):
        struct.pack_into("<IqBd", buf, pos, channel, ts_ms, 1, value)
    else:
        struct.pack_into(_READING, buf, pos, channel, ts_ms, 0, value)


def _unpack_value(buf, pos):
    channel, ts_ms, kind, value = struct.unpack_from(_READING, buf, pos)
    if kind == 1:
        value = struct.unpack_from("<d", buf, pos + 13)[0]
    return channel, ts_ms, value


class _Readings:
    """The readings of the batch being built, read where they lie in the log: a read-only
    sequence of (channel, ts_ms, value) for the codec that reads the batch's records again
    (into the record buffer, CRC-checked) on each pass instead of keeping a copy, so a batch
    holds no block that grows with it (a fragmented heap has few large free blocks, and a
    copy at 21 bytes a reading was the largest thing a batch kept). One pass at a time (the
    codec makes several, one after the other); close() closes the segment file."""

    def __init__(self, log, start):
        self.log = log
        self.start = start  # (segment, offset, skip) of the first reading
        self.end = start  # where the next batch starts, once walk() went over the readings
        self.n = 0
        self._f = None
        self._seg = None
        self._it = None  # __getitem__'s pass, and the index it yields next
        self._at = 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i < 0:
            i += self.n
        if i < 0 or i >= self.n:
            raise IndexError("reading index out of range")
        if self._it is None or i != self._at:  # the codec asks in order: one pass serves all
            self._it = self._readings()
            self._at = 0
            while self._at < i:
                next(self._it)
                self._at += 1
        self._at += 1
        return next(self._it)

    def __iter__(self):
        self._it = None  # its record is no longer in the record buffer after this pass
        return self._readings()

    def _readings(self):
        rec = self.log._rec
        left = self.n
        for first, take in self.walk(self.n):
            at = _HDR_LEN + 2 + first * _READING_LEN
            for _ in range(take):
                yield _unpack_value(rec, at)
                at += _READING_LEN
            left -= take
        if left:  # nothing is persisted yet: the uplink retries the batch later
            raise OSError("flash log: a record of the batch being encoded cannot be read again")

    def walk(self, limit):
        """Yields (first, take) for each record with readings of the batch, oldest first,
        the record in the log's record buffer while the caller has it: take readings from
        index first; at most limit readings in all. Sets end."""
        log = self.log
        seg, off, skip = self.start
        while True:
            if seg in log._seg_bytes:
                f = self._file(seg)
                while limit > 0:
                    f.seek(off)  # another pass may have moved the file in between
                    r = log._read_record(f)
                    if r is None or r < 0:
                        break
                    first = skip
                    take = min(r - first, limit)
                    limit -= take
                    if first + take < r:  # part of a record: the rest goes next time
                        skip = first + take
                    else:
                        off = f.tell()
                        skip = 0
                    self.end = (seg, off, skip)
                    yield first, take
                if limit <= 0:
                    return
            if seg >= log.w_seg:
                return
            seg, off, skip = seg + 1, 0, 0
            self.end = (seg, off, skip)

    def _file(self, seg):
        if self._seg != seg:
            self._close_file()
            self._f = open(self.log._f("s%08d" % seg), "rb")
            self._seg = seg
        return self._f

    def _close_file(self):
        f = self._f
        self._f = self._seg = None
        if f is not None:
            f.close()

    def close(self):
        self._it = None
        self._close_file()


class Buffer:
    """The reading buffer. path: a folder on the flash filesystem (created if missing).

    max_bytes bounds segments plus batches; beyond it the oldest unsent segment (else the
    oldest unacknowledged batch) is dropped and its readings counted in `dropped`.
    Readings wait in RAM until flush_count of them or flush() (the caller flushes on a timer,
    e.g. every 30 s, and always before a batch is taken): a power cut loses at most those."""

    def __init__(
        self, path, max_bytes=262144, segment_bytes=16384, flush_count=_PER_RECORD,
        live_window_ms=300000, batch_readings=_BATCH_READINGS,
    ):  # fmt: skip
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.flush_count = min(flush_count, _PER_RECORD)
        self.live_window_ms = live_window_ms
        self.batch_readings = max(1, batch_readings)
        self._rec = bytearray(_REC_MAX)
        self._out = bytearray(_ENCODE_BASE + _ENCODE_PER_READING * self.batch_readings)
        self._pend_n = 0
        self._pend_oldest = None
        try:
            os.mkdir(path)
        except OSError:
            pass
        self.boot = 0
        self.next_seq = 1
        self.cur_seg = 0
        self.cur_off = 0
        self.cur_skip = 0  # readings of the record at cur_off already in a batch
        self.dropped = 0
        self.acked = 0
        self.torn_records = 0  # bad tails found at open (each a record lost to a power cut)
        self._open()

    # -- files ---------------------------------------------------------------------------

    def _f(self, name):
        return self.path + "/" + name

    def _segments(self):
        out = []
        for name in os.listdir(self.path):
            if len(name) == 9 and name[0] == "s":
                out.append(int(name[1:]))
        out.sort()
        return out

    def _batch_seqs(self):
        out = []
        for name in os.listdir(self.path):
            if len(name) == 13 and name[0] == "b":
                out.append(int(name[1:]))
            elif name.endswith(".tmp"):
                os.remove(self._f(name))  # a write a power cut interrupted: never renamed
        out.sort()
        return out

    def _size(self, name):
        try:
            return os.stat(self._f(name))[6]
        except OSError:
            return 0

    def _write_atomic(self, name, *parts):
        tmp = self._f(name + ".tmp")
        with open(tmp, "wb") as f:
            for data in parts:
                f.write(data)
        os.rename(tmp, self._f(name))

    def _save_state(self):
        body = struct.pack(
            _STATE, _STATE_MAGIC, self.boot, self.next_seq, self.cur_seg, self.cur_off,
            self.cur_skip, self.dropped, self.acked,
        )  # fmt: skip
        self._write_atomic("state", body + struct.pack("<I", crc32(body)))

    def _load_state(self):
        try:
            with open(self._f("state"), "rb") as f:
                data = f.read()
        except OSError:
            return False
        n = struct.calcsize(_STATE)
        if len(data) != n + 4 or struct.unpack_from("<I", data, n)[0] != crc32(data[:n]):
            raise LogError(
                "%s/state is damaged: the flash may be failing; erase the log folder to start "
                "over (unsent readings are lost) and check the board" % self.path
            )
        (magic, self.boot, self.next_seq, self.cur_seg, self.cur_off, self.cur_skip,
         self.dropped, self.acked) = struct.unpack_from(_STATE, data, 0)  # fmt: skip
        return magic == _STATE_MAGIC

    def _read_batch_header(self, seq):
        try:
            with open(self._f("b%012d" % seq), "rb") as f:
                head = f.read(_BATCH_LEN)
        except OSError:
            return None
        if len(head) < _BATCH_LEN:
            return None
        h = struct.unpack(_BATCH, head)
        return h if h[0] == _BATCH_MAGIC else None

    def _open(self):
        self._load_state()
        # Batches written before a power cut took the state with them: repair from headers.
        self._batches = {}  # seq -> (readings, file bytes)
        for seq in self._batch_seqs():
            h = self._read_batch_header(seq)
            if h is None:
                os.remove(self._f("b%012d" % seq))
                continue
            self._batches[seq] = (h[6], self._size("b%012d" % seq))
            if seq >= self.next_seq:
                self.next_seq = seq + 1
                if (h[3], h[4], h[5]) > (self.cur_seg, self.cur_off, self.cur_skip):
                    self.cur_seg, self.cur_off, self.cur_skip = h[3], h[4], h[5]
        segs = self._segments()
        self._seg_bytes = {}
        for s in segs:
            if s < self.cur_seg:
                os.remove(self._f("s%08d" % s))
            else:
                self._seg_bytes[s] = self._size("s%08d" % s)
        # Count what is unsent (and find torn tails) once; kept up to date afterwards.
        self.unsent = -self.cur_skip
        self.oldest_ts_ms = None
        for s in sorted(self._seg_bytes):
            off = self.cur_off if s == self.cur_seg else 0
            with open(self._f("s%08d" % s), "rb") as f:
                f.seek(off)
                while True:
                    r = self._read_record(f)
                    if r is None:
                        break
                    if r < 0:
                        self.torn_records += 1
                        break
                    self.unsent += r
        self.w_seg = (segs[-1] + 1) if segs else self.cur_seg
        if self.cur_seg not in self._seg_bytes and not (segs and segs[-1] >= self.cur_seg):
            self.cur_seg, self.cur_off, self.cur_skip = self.w_seg, 0, 0
        if self.unsent < 0:
            self.unsent = 0
        self._save_state()

    def _read_record(self, f):
        """Reads the next record into self._rec: its reading count, None at a clean end,
        -1 for a torn or damaged record (the end of the usable segment)."""
        rec = self._rec
        mv = memoryview(rec)
        n = f.readinto(mv[:_HDR_LEN])
        if not n:
            return None
        if n < _HDR_LEN:
            return -1
        magic, kind, length, crc = struct.unpack_from(_HDR, rec, 0)
        if magic != _MAGIC or kind != _KIND_READINGS or length > _REC_MAX - _HDR_LEN:
            return -1
        if f.readinto(mv[_HDR_LEN : _HDR_LEN + length]) != length:
            return -1
        if crc32(mv[_HDR_LEN : _HDR_LEN + length]) != crc:
            return -1
        count = rec[_HDR_LEN] | rec[_HDR_LEN + 1] << 8
        if 2 + count * _READING_LEN != length:
            return -1
        return count

    # -- appending -----------------------------------------------------------------------

    def increment_boot(self):
        """Count one start of the gateway (for birth/will); persisted at once."""
        self.boot += 1
        self._save_state()
        return self.boot

    def append(self, readings):
        """Add readings [(channel, ts_ms, value)]; written to flash in records of
        flush_count (the rest waits for the next append or flush()).

        Takes all of them or, raising MemoryError or OSError (a full record that could not
        be written, see flush()), none: the caller may hand the same readings in again.
        Only a call with more readings than a record holds, whose first records were
        written, keeps what it could and counts the rest in `dropped` instead of raising.
        A record that could not be written stays in RAM, full, until a later append or
        flush() writes it; nothing is ever packed past it."""
        rec = self._rec
        mark = self._pend_n  # readings of earlier calls: never undone
        mark_oldest = self._pend_oldest
        wrote = False
        i = 0
        for r in readings:
            if self._pend_n >= self.flush_count:
                try:
                    self._flush()
                except (MemoryError, OSError) as e:
                    if not wrote:
                        self._pend_n = mark  # this call's readings were never taken
                        self._pend_oldest = mark_oldest
                        raise
                    self.dropped += len(readings) - i
                    print("flashlog: readings dropped, the record cannot be written:", e)
                    return
                wrote = True
            if self._pend_n == 0:
                self._pend_oldest = r[1]
            _pack_value(rec, _HDR_LEN + 2 + self._pend_n * _READING_LEN, r[0], r[1], r[2])
            self._pend_n += 1
            i += 1
        if self._pend_n >= self.flush_count:
            self.flush()  # if it fails they are taken all the same: the next one writes them

    def flush(self):
        """Write the readings waiting in RAM as one record (one flash write); on MemoryError
        collect and try once more. True if no reading waits in RAM afterwards; False if the
        record could not be written (logged): the readings stay in RAM, counted nowhere
        else, and the next flush writes them, into a new segment if the failed write may
        have left part of a record (reading a segment stops at a damaged record)."""
        try:
            self._flush()
        except (MemoryError, OSError) as e:
            print("flashlog: readings wait in RAM, the record cannot be written:", e)
            return False
        return True

    def _flush(self):
        """flush(), raising MemoryError or OSError when the record cannot be written: for
        callers that must not read a record into the buffer that still holds them."""
        if not self._pend_n:
            return
        try:
            self._write_record()
        except MemoryError:
            gc.collect()
            self._write_record()
        try:
            self._bound()
        except (MemoryError, OSError) as e:  # the record is written: bounded at the next one
            print("flashlog: bound not applied:", e)

    def _write_record(self):
        n = self._pend_n
        rec = self._rec
        length = 2 + n * _READING_LEN
        rec[_HDR_LEN] = n & 0xFF
        rec[_HDR_LEN + 1] = n >> 8
        mv = memoryview(rec)
        struct.pack_into(_HDR, rec, 0, _MAGIC, _KIND_READINGS, length,
                         crc32(mv[_HDR_LEN : _HDR_LEN + length]))  # fmt: skip
        seg = self.w_seg
        path = self._f("s%08d" % seg)
        known = self._seg_bytes.get(seg, 0)
        f = open(path, "ab")  # failing here, nothing was written
        try:
            # The entry exists before the write: afterwards no step may need the heap.
            self._seg_bytes[seg] = known
            f.write(mv[: _HDR_LEN + length])
            f.close()
        except (MemoryError, OSError):  # part of the record may be on flash
            try:
                f.close()
            except OSError:
                pass
            self._after_failed_write(seg, path, known)
            raise
        self._pend_n = 0
        if self.oldest_ts_ms is None and not self.unsent:  # else older ones are on flash
            self.oldest_ts_ms = self._pend_oldest
        self.unsent += n
        size = known + _HDR_LEN + length
        self._seg_bytes[seg] = size
        if size >= self.segment_bytes:
            self.w_seg = seg + 1

    def _after_failed_write(self, seg, path, known):
        """A record write failed: if the segment grew, it ends in part of a record, and a
        later record written after it could not be read: go on in a new segment."""
        try:
            size = os.stat(path)[6]
        except (OSError, MemoryError):
            size = -1  # unknown: assume the worst
        if size != known:
            self.w_seg = seg + 1
            if size > 0:
                try:  # counted towards max_bytes, deleted once the cursor passes it
                    self._seg_bytes[seg] = size
                except MemoryError:
                    pass

    def _bound(self):
        while self.file_bytes() > self.max_bytes:
            segs = sorted(self._seg_bytes)
            if len(segs) > 1:
                self._drop_segment(segs[0])
            elif self._batches:
                seq = min(self._batches)
                self.dropped += self._batches[seq][0]
                self._forget_batch(seq)
                self._save_state()
            else:
                return

    def _drop_segment(self, s):
        n = 0
        with open(self._f("s%08d" % s), "rb") as f:
            if s == self.cur_seg:
                f.seek(self.cur_off)
                n = -self.cur_skip
            while True:
                r = self._read_record(f)
                if r is None or r < 0:
                    break
                n += r
        self.dropped += n
        self.unsent -= n
        nxt = s + 1
        while nxt not in self._seg_bytes and nxt < self.w_seg:
            nxt += 1
        self.cur_seg, self.cur_off, self.cur_skip = nxt, 0, 0
        self._save_state()
        os.remove(self._f("s%08d" % s))
        del self._seg_bytes[s]
        self.oldest_ts_ms = None  # unknown until the next batch reads it

    # -- batches -------------------------------------------------------------------------

    def next_batch(self, max_readings, now_ms, resolution=None, encode=None):
        """The next unsent readings (oldest first, at most max_readings) as a
        new Batch with the next seq, encoded and persisted before it is returned; None if
        nothing is unsent. historical when its oldest reading is older than live_window_ms.
        encode(seq, readings, historical, resolution) -> bytes; default protocols.codec,
        written into the buffer made at start: the Batch's payload is then a memoryview of
        it, valid until the next call (the uplink publishes it at once). MemoryError or
        OSError if the readings in RAM cannot be written first (they stay there)."""
        self._flush()  # records are read into the buffer that holds them
        max_readings = min(max_readings, self.batch_readings)
        if max_readings < 1:
            return None
        readings = _Readings(self, (self.cur_seg, self.cur_off, self.cur_skip))
        try:
            return self._take(readings, max_readings, now_ms, resolution, encode)
        finally:
            readings.close()

    def _take(self, readings, max_readings, now_ms, resolution, encode):
        rec = self._rec
        oldest = None
        for first, take in readings.walk(max_readings):
            at = _HDR_LEN + 6 + first * _READING_LEN  # ts_ms, without making the tuple
            for _ in range(take):
                ts = struct.unpack_from("<q", rec, at)[0]
                if oldest is None or ts < oldest:
                    oldest = ts
                at += _READING_LEN
            readings.n += take
        if not readings.n:
            return None
        seg, off, skip = readings.end
        historical = now_ms - oldest > self.live_window_ms
        seq = self.next_seq
        payload, kept = self._encode(seq, readings, historical, resolution, encode)
        count = len(readings)
        readings.close()  # before its segment may be deleted
        self.dropped += count - kept
        body = struct.pack(_BATCH, _BATCH_MAGIC, seq, historical, seg, off, skip, kept, now_ms)
        crc = crc32(payload, crc32(body))  # of body + payload, without joining them
        self._write_atomic("b%012d" % seq, body, payload, struct.pack("<I", crc))
        self._batches[seq] = (kept, len(body) + len(payload) + 4)
        self.next_seq = seq + 1
        self.cur_seg, self.cur_off, self.cur_skip = seg, off, skip
        self.unsent -= count
        self.oldest_ts_ms = None
        self._save_state()
        for s in sorted(self._seg_bytes):
            if s < seg:
                os.remove(self._f("s%08d" % s))
                del self._seg_bytes[s]
        return Batch(seq, historical, kept, payload, now_ms)

    def _encode(self, seq, readings, historical, resolution, encode):
        from protocols.codec import CodecError

        if encode is None:
            from protocols.codec import encode_batch

            out = self._out

            def encode(seq, readings, historical, resolution):
                return encode_batch(seq, readings, historical, resolution, out=out)

        try:
            return encode(seq, readings, historical, resolution), len(readings)
        except CodecError:
            pass
        # One reading the codec refuses must not block the others forever: keep the rest
        # (readings it refuses alone, then a second reading of a channel at the same time).
        kept = []
        seen = set()
        for r in readings:
            try:
                encode(seq, [r], historical, resolution)
            except CodecError:
                continue
            if (r[0], r[1]) not in seen:
                seen.add((r[0], r[1]))
                kept.append(r)
        seen = None
        try:
            return encode(seq, kept, historical, resolution), len(kept)
        except CodecError as e:  # nothing else to try: set them aside (counted as dropped)
            print("flashlog: batch %d: the codec refuses its readings (%s); dropped" % (seq, e))
            return encode(seq, [], historical, resolution), 0

    def unacked(self):
        """Seqs of batches awaiting the fleet's ack, oldest first (resend these after boot)."""
        return sorted(self._batches)

    def batch(self, seq):
        """The Batch of seq as stored (identical bytes), or None if unknown or damaged."""
        # The header and CRC go through a small buffer of their own (the record buffer holds
        # readings not yet flushed); the payload is read into one block of its own size (no
        # whole-file read and slice: two blocks, one of them grown).
        name = self._f("b%012d" % seq)
        try:
            size = os.stat(name)[6]
            if size < _BATCH_LEN + 4:
                return None
            payload = bytearray(size - _BATCH_LEN - 4)
            head = bytearray(_BATCH_LEN + 4)  # the header, then the CRC
            mv = memoryview(head)
            with open(name, "rb") as f:
                if f.readinto(mv[:_BATCH_LEN]) != _BATCH_LEN:
                    return None
                if f.readinto(payload) != len(payload):
                    return None
                if f.readinto(mv[_BATCH_LEN : _BATCH_LEN + 4]) != 4:
                    return None
        except OSError:
            return None
        crc = crc32(payload, crc32(mv[:_BATCH_LEN]))
        if crc != struct.unpack_from("<I", head, _BATCH_LEN)[0]:
            return None
        h = struct.unpack_from(_BATCH, head, 0)
        return Batch(h[1], bool(h[2]), h[6], payload, h[7])

    def ack(self, seq, error=None):
        """The fleet stored batch seq (or refused it for good: error): delete it; returns
        its reading count, 0 if unknown (acknowledged before, or dropped by the bound)."""
        b = self._batches.get(seq)
        if b is None:
            return 0
        if error is None:
            self.acked += b[0]
        else:
            self.dropped += b[0]
        self._forget_batch(seq)
        self._save_state()
        return b[0]

    def _forget_batch(self, seq):
        del self._batches[seq]
        try:
            os.remove(self._f("b%012d" % seq))
        except OSError:
            pass

    # -- status --------------------------------------------------------------------------

    def file_bytes(self):
        n = 0
        for v in self._seg_bytes.values():
            n += v
        for v in self._batches.values():
            n += v[1]
        return n

    def depth(self):
        """Readings held: in RAM, unsent on flash, and in unacknowledged batches."""
        n = self.unsent + self._pend_n
        for v in self._batches.values():
            n += v[0]
        return n

    def oldest_unsent_ts_ms(self):
        """ts_ms of the first unsent reading (flash or RAM), None if there is none."""
        if self.oldest_ts_ms is None and self.unsent:
            # The record buffer holds the readings not yet written: write them before a
            # record is read into it (once per batch: the cache lasts until the next one).
            try:
                self._flush()
            except (MemoryError, OSError):  # the oldest on flash stays unknown for now
                return self._pend_oldest if self._pend_n else None
            seg = self.cur_seg
            while seg <= self.w_seg and self.oldest_ts_ms is None:
                if seg in self._seg_bytes:
                    with open(self._f("s%08d" % seg), "rb") as f:
                        skip = 0
                        if seg == self.cur_seg:
                            f.seek(self.cur_off)
                            skip = self.cur_skip
                        r = self._read_record(f)
                        if r is not None and r > skip:
                            pos = _HDR_LEN + 6 + skip * _READING_LEN
                            self.oldest_ts_ms = struct.unpack_from("<q", self._rec, pos)[0]
                seg += 1
        if self.oldest_ts_ms is None and self._pend_n:
            return self._pend_oldest
        return self.oldest_ts_ms

    def status(self):
        """The buffer's fields of the status message."""
        return {
            "depth": self.depth(),
            "unacked_batches": len(self._batches),
            "oldest_unsent_ts_ms": self.oldest_unsent_ts_ms(),
            "dropped_readings": self.dropped,
            "acked_readings": self.acked,
            "next_seq": self.next_seq,
            "boot": self.boot,
            "file_bytes": self.file_bytes(),
            "torn_records": self.torn_records,
        }
