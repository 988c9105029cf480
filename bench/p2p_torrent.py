"""The libtorrent alternative for ``bench/p2p.py``: one node's BitTorrent client for one image.

The issue asks whether Gaia should drive a well-kept swarm engine (libtorrent-rasterbar, through
its PyPI bindings) instead of its own piece protocol over HTTP. This script is that engine as a
node would run it, so the bench can measure both on the same namespaces and links:

- ``make``: build one single-file torrent per blob (pieces of Gaia's size rule,
  ``gaia.domain.swarm.piece_size``) from the blobs on disk. BitTorrent needs every piece's hash
  in the metainfo before any peer can start, so in production someone would read each layer
  whole first; the bench hands the metainfo over for free, which flatters libtorrent.
- ``run``: join every torrent of the image with libtorrent, connect to the given peers (the
  coordinator's job in Gaia: no tracker, no DHT), and, on the one node named the fetcher, add
  the registry's blob URL as a web seed (BEP 19; HTTP Range requests), so the registry is read
  about once, as in Gaia. Prints ``done <seconds>`` when every blob is complete and verified
  (libtorrent checks each piece's hash), then keeps seeding until killed.

Standard library and ``libtorrent`` only: it runs inside a network namespace as its own process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

MIN_PIECE = 1 << 20
MAX_PIECE = 16 << 20


def _piece_size(size: int) -> int:
    # gaia.domain.swarm.piece_size, repeated here so the script needs no Gaia import
    wanted = -(-size // 128)
    piece = MIN_PIECE
    while piece < wanted and piece < MAX_PIECE:
        piece <<= 1
    return piece


def make(blobs: list[Path], out: Path) -> None:
    """One ``<hex>.torrent`` per blob file (named ``<hex>``) under ``out``."""
    import libtorrent as lt

    out.mkdir(parents=True, exist_ok=True)
    for blob in blobs:
        files = lt.list_files(str(blob))
        torrent = lt.create_torrent(
            files, _piece_size(blob.stat().st_size), flags=lt.create_torrent.v1_only
        )
        lt.set_piece_hashes(torrent, str(blob.parent))
        (out / f"{blob.name}.torrent").write_bytes(lt.bencode(torrent.generate()))


def run(args: argparse.Namespace) -> int:
    import libtorrent as lt

    settings: dict[str, Any] = {
        "listen_interfaces": f"0.0.0.0:{args.port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification,
        # every peer is on the bench's one subnet: without these libtorrent treats them as
        # local and would not count them against limits (the links are shaped by tc anyway)
        "connections_limit": 500,
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
    }
    session = lt.session(settings)
    save = Path(args.save_dir)
    save.mkdir(parents=True, exist_ok=True)
    handles = []
    for path in sorted(Path(args.torrents).glob("*.torrent")):
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(str(path))
        params.save_path = str(save)
        handle = session.add_torrent(params)
        if args.web_seed:
            # the registry serves the blob at <base>/<digest>; the file is named by its hex
            digest = "sha256:" + path.name.removesuffix(".torrent")
            handle.add_url_seed(f"{args.web_seed.rstrip('/')}/{digest}")
        handles.append(handle)
    begun = time.monotonic()
    peers = [p for p in args.peers.split(",") if p] if args.peers else []
    connected_at = 0.0
    finished = False
    while True:
        now = time.monotonic()
        if peers and now - connected_at > 2.0:  # (re)connect: peers start at different times
            for handle in handles:
                for peer in peers:
                    host, port = peer.rsplit(":", 1)
                    handle.connect_peer((host, int(port)))
            connected_at = now
        if not finished and all(h.status().is_seeding for h in handles):
            finished = True
            print(f"done {now - begun:.3f}", flush=True)
            if args.status:
                Path(args.status).write_text(
                    json.dumps({"seconds": now - begun, "downloaded": _downloaded(handles)})
                )
        for alert in session.pop_alerts():
            print(f"libtorrent: {alert.message()}", file=sys.stderr, flush=True)
        time.sleep(0.05)


def _downloaded(handles: list[Any]) -> dict[str, int]:
    total_payload = sum(h.status().total_payload_download for h in handles)
    return {"payload": int(total_payload)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make_cmd = sub.add_parser("make", help="one torrent per blob file")
    make_cmd.add_argument("--out", required=True)
    make_cmd.add_argument("blobs", nargs="+")
    run_cmd = sub.add_parser("run", help="download the torrents, then seed until killed")
    run_cmd.add_argument("--torrents", required=True, help="folder of .torrent files")
    run_cmd.add_argument("--save-dir", required=True)
    run_cmd.add_argument("--port", type=int, default=6881)
    run_cmd.add_argument("--peers", default="", help="host:port,host:port of the other nodes")
    run_cmd.add_argument("--web-seed", default="", help="registry blob base URL (fetcher only)")
    run_cmd.add_argument("--status", default="", help="write {seconds, downloaded} here")
    args = parser.parse_args(argv)
    if args.command == "make":
        make([Path(b) for b in args.blobs], Path(args.out))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
