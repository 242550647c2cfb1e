"""Opening the files a checkpoint is made of, with errors that name the file.

Every reader in `minigemma.formats` opens its files here:

    regular_file(path, what)   the path, if it is a regular file (FileNotFoundError if there
                               is nothing, ValueError for a folder, FIFO or device: opening a
                               FIFO would block forever)
    read_bytes(path, what)     its content, refused above a size limit
    read_json(path, what)      a JSON object, strictly: UTF-8 without a byte-order mark, no
                               duplicate keys, an object at the top

`what` says what the file is for ("config.json of an HF folder"), for the message.
"""
import json
import os
import stat

JSON_LIMIT = 64 * 1024 * 1024  # a config or index file larger than this is not one


def regular_file(path, what="file"):
    """`path` as a str, checked to be a regular file (a symlink to one is fine)."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (the {what})") from None
    except OSError as e:  # a path through a file, a name too long…
        raise ValueError(f"{path}: cannot open the {what} ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO or device)"
        raise ValueError(f"{path}: the {what} is {kind}")
    return path


def read_bytes(path, what="file", limit=None):
    """The content of the regular file `path`; ValueError when it is larger than `limit`."""
    path = regular_file(path, what)
    size = os.path.getsize(path)
    if limit is not None and size > limit:
        raise ValueError(f"{path}: the {what} has {size} bytes, more than the {limit} a "
                         f"{what} can have")
    with open(path, "rb") as f:
        return f.read()


def read_json(path, what="JSON file"):
    """The JSON object in `path` as a dict (ValueError naming the file for anything else)."""
    data = read_bytes(path, what, JSON_LIMIT)
    if data.startswith(b"\xef\xbb\xbf"):
        raise ValueError(f"{path}: the {what} starts with a UTF-8 byte-order mark; JSON files "
                         f"have none (save it as plain UTF-8)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: the {what} is not UTF-8 text (byte {e.start}: "
                         f"{data[e.start:e.start + 1]!r})") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the {what} is not valid JSON ({e})") from None
    except _DuplicateKey as e:
        raise ValueError(f"{path}: the {what} has the key {e.args[0]!r} twice") from None
    except RecursionError:
        raise ValueError(f"{path}: the {what} is nested too deeply to be a config") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the {what} must hold a JSON object, not a "
                         f"{type(value).__name__}")
    return value


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs):
    d = {}
    for key, value in pairs:
        if key in d:
            raise _DuplicateKey(key)
        d[key] = value
    return d
