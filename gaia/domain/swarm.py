"""Pure rules of P2P image distribution (issue 17; docs/p2p.md): how a blob is cut into pieces.

The coordinator's swarm state and parent choice join this module; the agent and the
coordinator share the geometry below, so both cut a blob the same way.
"""

from __future__ import annotations

MIN_PIECE = 1 << 20  # 1 MiB
MAX_PIECE = 16 << 20  # 16 MiB
TARGET_PIECES = 128


def piece_size(size: int) -> int:
    """The smallest power of two at least ``size / TARGET_PIECES``, within [1 MiB, 16 MiB]."""
    if size < 0:
        raise ValueError(f"a blob size cannot be negative: {size}")
    wanted = -(-size // TARGET_PIECES)  # ceil
    piece = MIN_PIECE
    while piece < wanted and piece < MAX_PIECE:
        piece <<= 1
    return piece


def piece_count(size: int, piece: int) -> int:
    """Pieces of a blob of ``size`` bytes; an empty blob still has one (empty) piece."""
    return max(1, -(-size // piece))


def piece_range(index: int, size: int, piece: int) -> tuple[int, int]:
    """Bytes ``[start, end)`` of piece ``index``."""
    if not 0 <= index < piece_count(size, piece):
        raise ValueError(f"piece {index} is outside a blob of {size} bytes in pieces of {piece}")
    start = index * piece
    return start, min(start + piece, size)
