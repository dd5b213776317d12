"""The Reed-Solomon erasure code of parity chunks (docs/bundle-format.md section 9.2), on NumPy.

The code is the systematic one that Luigi Rizzo's ``fec.c`` (and zfec, which wraps it) computes: GF(2^8)
modulo ``0x11D``, generator matrix ``G = V · T⁻¹`` for the Vandermonde matrix ``V`` at the points ``0, α^0,
α^1, …`` and its top square ``T``. This is an implementation of the spec, written for airgap; it produces the
same bytes as zfec.

Every output block is a fixed linear combination of ``K`` input blocks: parity share ``K + j`` is
``Σ_i G[K + j][i] · D_i`` and, given any ``K`` shares with the ``K × K`` matrix ``A`` of their rows of ``G``,
any share ``n`` is ``Σ_i (G[n] · A⁻¹)[i] · S_i``. :class:`Combiner` applies such a matrix, computed once per
stripe, to blocks, byte-wise with table lookups:

- the products by the coefficients of up to 8 output rows are packed into one table of 256 words per
  input (byte ``r`` of ``table[d]`` is ``C[r][i] · d``), so that a single :func:`numpy.take` per input and
  block gives its contribution to all of these rows at once, and one XOR accumulates it;
- the input bytes are widened once to ``intp`` indexes (NumPy converts any other index type itself, into a
  temporary, on every call) and looked up with ``mode="clip"`` (no bounds check; every byte is in range);
- an input whose coefficients are all 0 is skipped, and a single row's coefficient 1 is a plain XOR;
- blocks are processed :data:`STEP` bytes at a time, so that the indexes (8 bytes per byte) and the sums stay
  in the CPU's cache (64 KiB measured best, against 16 KiB to 1 MiB).

NumPy releases the GIL in these loops, so reading and hashing on another thread overlap with them. A
:class:`Combiner` keeps scratch buffers between calls: use one from one thread at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

Block: TypeAlias = bytes | bytearray | memoryview | NDArray[np.uint8]
Matrix: TypeAlias = NDArray[np.uint8]

POLYNOMIAL = 0x11D  # x^8 + x^4 + x^3 + x^2 + 1
MAX_SHARES = 256  # K + M: there are 256 evaluation points in GF(2^8)
_GROUP = 8  # output rows whose products are packed into one table word (uint64)
STEP = 64 * 1024  # bytes of each block processed at a time


def _tables() -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.uint8], NDArray[np.uint8]]:
    exp = np.zeros(510, np.uint8)
    log = np.zeros(256, np.int64)
    x = 1
    for e in range(255):
        exp[e] = x
        log[x] = e
        x <<= 1
        if x & 0x100:
            x ^= POLYNOMIAL
    exp[255:] = exp[:255]
    mul = exp[log[:, None] + log[None, :]]
    mul[0, :] = 0
    mul[:, 0] = 0
    inv = np.zeros(256, np.uint8)
    inv[1:] = exp[255 - log[1:]]
    for table in (exp, log, mul, inv):
        table.flags.writeable = False
    return exp, log, mul, inv


EXP, LOG, MUL, INV = _tables()
"""``EXP[e] = α^e`` (for ``0 ≤ e < 510``), ``LOG[α^e] = e``, ``MUL[a][b] = a · b``, ``INV[a] = a⁻¹``."""


def matmul(a: Matrix, b: Matrix) -> Matrix:
    """The product of two matrices over GF(2^8)."""
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply a {a.shape} matrix by a {b.shape} one")
    out = np.zeros((a.shape[0], b.shape[1]), np.uint8)
    for i in range(a.shape[1]):
        out ^= MUL[a[:, i][:, None], b[i][None, :]]
    return out


def inverse(matrix: Matrix) -> Matrix:
    """The inverse of a square matrix over GF(2^8), by Gauss-Jordan elimination. ValueError if singular."""
    k = matrix.shape[0]
    if matrix.shape != (k, k):
        raise ValueError(f"a {matrix.shape} matrix has no inverse")
    a = np.concatenate([np.asarray(matrix, np.uint8), np.eye(k, dtype=np.uint8)], axis=1)
    for col in range(k):
        nonzero = np.flatnonzero(a[col:, col])
        if not nonzero.size:
            raise ValueError("the matrix is singular")
        pivot = col + int(nonzero[0])
        if pivot != col:
            a[[col, pivot]] = a[[pivot, col]]
        a[col] = MUL[INV[a[col, col]]][a[col]]
        factors = a[:, col].copy()
        factors[col] = 0
        a ^= MUL[factors[:, None], a[col][None, :]]  # every other row: row - factor · pivot row
    return np.ascontiguousarray(a[:, k:])


def _check(k: int, m: int) -> None:
    if k < 1 or m < 0 or k + m > MAX_SHARES:
        raise ValueError(f"K = {k}, M = {m}: need K >= 1, M >= 0 and K + M <= {MAX_SHARES}")


@functools.lru_cache(maxsize=64)
def generator(k: int, m: int) -> Matrix:
    """``G``, ``K + M`` rows by ``K`` columns: the identity, then the rows of the ``M`` parity shares
    (read-only)."""
    _check(k, m)
    rows = np.arange(k + m - 1)[:, None] * np.arange(k)[None, :] % 255
    vandermonde = np.concatenate([np.eye(1, k, dtype=np.uint8), EXP[rows]])  # rows: the points 0, α^0, α^1, …
    g = matmul(vandermonde, inverse(vandermonde[:k]))
    g.flags.writeable = False
    return g


def _share_numbers(k: int, m: int, numbers: Sequence[int], what: str) -> list[int]:
    out = [int(n) for n in numbers]
    if any(not 0 <= n < k + m for n in out):
        raise ValueError(f"{what} {out}: share numbers go from 0 to {k + m - 1}")
    return out


def recovery_matrix(k: int, m: int, known: Sequence[int], wanted: Sequence[int]) -> Matrix:
    """The matrix that gives the shares ``wanted`` from the ``k`` shares ``known`` (share numbers, in the order
    of the blocks): ``G[wanted] · G[known]⁻¹``."""
    _check(k, m)
    known = _share_numbers(k, m, known, "known shares")
    wanted = _share_numbers(k, m, wanted, "wanted shares")
    if len(known) != k or len(set(known)) != k:
        raise ValueError(f"known shares {known}: need {k} distinct shares")
    g = generator(k, m)
    if known == list(range(k)):
        return np.array(g[wanted], np.uint8)
    return matmul(np.array(g[wanted], np.uint8), inverse(g[known]))


def as_array(block: Block) -> NDArray[np.uint8]:
    """A one-dimensional uint8 view of a block (no copy)."""
    return np.frombuffer(block, dtype=np.uint8)


class Combiner:
    """Applies a fixed matrix ``C`` (``T`` rows by ``K`` columns, over GF(2^8)) to ``K`` blocks of equal length:
    output ``r`` is ``Σ_i C[r][i] · block_i``, byte by byte."""

    def __init__(self, matrix: Matrix, *, step: int = STEP) -> None:
        matrix = np.array(matrix, np.uint8, ndmin=2)
        if matrix.ndim != 2 or matrix.shape[1] < 1:
            raise ValueError(f"a {matrix.shape} matrix combines no blocks")
        if step < 1:
            raise ValueError(f"step {step}: must be positive")
        self.matrix = matrix
        self.inputs = matrix.shape[1]
        self.step = step
        self._groups: list[_Group] = []
        for start in range(0, matrix.shape[0], _GROUP):
            rows = matrix[start:start + _GROUP]
            width = 1 << (len(rows) - 1).bit_length()  # bytes per table word: 1, 2, 4 or 8
            packed = np.zeros((self.inputs, 256, width), np.uint8)
            packed[:, :, :len(rows)] = MUL[rows].transpose(1, 2, 0)  # [i][d][r] = rows[r][i] · d
            tables = packed.view(np.dtype(f"u{width}")).reshape(self.inputs, 256)
            self._groups.append(_Group(start, len(rows), tables))
        # per input: the groups it contributes to (products by 0 are skipped), and whether its term is the input
        # itself (a group of a single row, coefficient 1)
        self._uses = [[(g, g.rows == 1 and matrix[g.start, i] == 1)
                       for g in self._groups if matrix[g.start:g.start + g.rows, i].any()]
                      for i in range(self.inputs)]
        self._index = np.empty(step, np.intp)
        self._products = {g.width: np.empty(step, g.tables.dtype) for g in self._groups}
        self._sums = [np.empty(step if g.width > 1 else 0, g.tables.dtype) for g in self._groups]

    def __call__(self, blocks: Sequence[Block]) -> list[NDArray[np.uint8]]:
        """The ``T`` output blocks (new arrays) for ``K`` input blocks of equal length."""
        if len(blocks) != self.inputs:
            raise ValueError(f"{len(blocks)} blocks given, {self.inputs} needed")
        data = [as_array(b) for b in blocks]
        n = len(data[0])
        if any(len(d) != n for d in data):
            raise ValueError(f"blocks of different lengths: {sorted({len(d) for d in data})}")
        out = np.empty((self.matrix.shape[0], n), np.uint8)
        # a slice at a time, so that the indexes and sums (up to 16 bytes per byte of a block) stay in cache
        for lo in range(0, n, self.step):
            hi = min(n, lo + self.step)
            self._slice([d[lo:hi] for d in data], out[:, lo:hi])
        return list(out)

    def _slice(self, data: list[NDArray[np.uint8]], out: NDArray[np.uint8]) -> None:
        n = out.shape[1]
        index = self._index[:n]
        sums = [out[g.start] if g.width == 1 else s[:n] for g, s in zip(self._groups, self._sums, strict=True)]
        started = [False] * len(self._groups)
        for i, uses in enumerate(self._uses):
            if not all(copy for _, copy in uses):
                np.copyto(index, data[i], casting="safe")
            for g, copy in uses:
                first = not started[g.number]
                started[g.number] = True
                acc = sums[g.number]
                if copy:
                    term: NDArray[Any] = data[i]
                else:
                    term = acc if first else self._products[g.width][:n]
                    np.take(g.tables[i], index, out=term, mode="clip")
                if first:
                    if term is not acc:
                        np.copyto(acc, term)
                else:
                    np.bitwise_xor(acc, term, out=acc)
        for g, acc, began in zip(self._groups, sums, started, strict=True):
            if not began:
                acc[:] = 0  # a row of zeros (no matrix of the code has one)
            if g.width > 1:
                lanes = acc.view(np.uint8).reshape(n, g.width)
                for r in range(g.rows):
                    np.copyto(out[g.start + r], lanes[:, r])


@dataclass(frozen=True)
class _Group:
    """Up to :data:`_GROUP` consecutive rows of a :class:`Combiner`'s matrix, whose products are looked up
    together: ``tables[i][d]`` holds ``C[start + r][i] · d`` in its byte ``r``."""

    start: int
    rows: int
    tables: NDArray[Any]

    @property
    def number(self) -> int:
        return self.start // _GROUP

    @property
    def width(self) -> int:
        return self.tables.dtype.itemsize


def encode(k: int, m: int, data: Sequence[Block], wanted: Sequence[int] | None = None) -> list[NDArray[np.uint8]]:
    """The shares ``wanted`` (default: the ``m`` parity shares, ``k`` to ``k + m - 1``) of the ``k`` data
    blocks ``data``. For many blocks of a stripe, make a :class:`Combiner` of :func:`recovery_matrix` once."""
    wanted = list(range(k, k + m)) if wanted is None else wanted
    return Combiner(recovery_matrix(k, m, list(range(k)), wanted))(data)


def decode(k: int, m: int, shares: Sequence[Block], numbers: Sequence[int]) -> list[NDArray[np.uint8]]:
    """The ``k`` data blocks, from any ``k`` shares ``shares`` whose share numbers are ``numbers``."""
    numbers = _share_numbers(k, m, numbers, "share numbers")
    if len(shares) != len(numbers) or len(set(numbers)) != k or len(numbers) != k:
        raise ValueError(f"{len(shares)} shares numbered {numbers}: need {k} distinct shares")
    given = {n: as_array(b) for n, b in zip(numbers, shares, strict=True) if n < k}
    missing = [d for d in range(k) if d not in given]
    rebuilt = Combiner(recovery_matrix(k, m, numbers, missing))(shares) if missing else []
    given.update(zip(missing, rebuilt, strict=True))
    return [given[d] for d in range(k)]
