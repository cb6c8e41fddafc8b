"""Import from a camera or phone over PTP/MTP, through libgphoto2 (python-gphoto2).

A camera in PTP mode is not a mounted filesystem: there is nothing to mount read-only, no
file descriptor to hash while reading. Decision 4 still holds, so this source keeps the same
promises as a card, by other means:

* Nothing on the camera is ever changed. The only libgphoto2 calls made are init and exit,
  folder and file listings, file info, and file reads: never delete, upload, rename, set
  info, capture or configuration writes (tests/test_ptp.py checks this on the code itself
  and on a camera's files after an import).
* Bytes are streamed, never held whole: a 4 GB clip on a 1 GB box must import. libgphoto2
  can read a file in parts (`gp_camera_file_read`, PTP GetPartialObject) into our own
  buffer. Camlibs without partial reads (the "Directory Browse" camlib used by the tests,
  some older cameras) answer GP_ERROR_NOT_SUPPORTED; for those the whole-file download is
  pointed at a pipe (a CameraFile made from a file descriptor, which libgphoto2 writes to
  as the data arrives) and drained here, still chunk by chunk. Holding the file in memory
  (`file_get` then `get_data_and_size`) is never done.
* Everything the camera says is untrusted: folder and file names are checked component by
  component (no "", ".", "..", "/" or NUL), the folder tree is walked to a bounded depth,
  and the byte count read must equal the size the camera listed.
* A camera unplugged mid-import surfaces as OSError(ENODEV), which the pipeline turns into
  "the source disappeared" and a clean stop. A failed read is told apart from a vanished
  camera by asking whether the port is still there (USB device listed, `disk:` folder
  present), since libgphoto2 reports both as plain I/O errors.

Threads: libgphoto2 contexts and cameras are not thread-safe. One CameraSource must be used
by one thread at a time (the importing thread). The pipe fallback runs the libgphoto2
download on a helper thread while the calling thread drains the pipe and feeds the sink;
the calling thread waits for the helper before returning, so the camera is never used by
two threads at once and the sink always runs on the caller's thread.

libgphoto2's own logging is very verbose and is deliberately left off (no
`gp.use_python_logging()`); its error strings are carried in the OSError messages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading

import gphoto2 as gp

from ingest.kinds import is_clutter, kind_of
from ingest.sources import CHUNK, BufferRing, Sink, SourceChangedError
from ingest.walk import Scan, SourceFile

DIRECTORY_BROWSE = "Directory Browse"  # libgphoto2's "camera" over a folder, port disk:PATH
MAX_DEPTH = 32  # a camera's folder tree is a few levels deep; a deeper one is broken or hostile
PIPE_SIZE = 1024 * 1024  # the unprivileged maximum on Linux (fs.pipe-max-size)
# An import stops ("the camera stopped responding") after this many I/O failures in a row
# from a camera whose port is still present: a wedged camera would otherwise time out once
# per remaining file.
MAX_IO_FAILURES = 3

# libgphoto2 errors that mean the camera itself is gone.
_GONE = frozenset({
    gp.GP_ERROR_IO_USB_FIND,
    gp.GP_ERROR_MODEL_NOT_FOUND,
    gp.GP_ERROR_UNKNOWN_PORT,
})
# Transport errors: the camera is gone, or one transfer failed. Which one is decided by
# looking for the port (see CameraSource._present).
_DEVICE_IO = frozenset({
    gp.GP_ERROR_IO,
    gp.GP_ERROR_IO_INIT,
    gp.GP_ERROR_IO_READ,
    gp.GP_ERROR_IO_WRITE,
    gp.GP_ERROR_IO_UPDATE,
    gp.GP_ERROR_IO_USB_CLEAR_HALT,
    gp.GP_ERROR_TIMEOUT,
})
# The rest, by meaning. Never ENOSPC/EDQUOT: the pipeline reads those as "archive disk full",
# and GP_ERROR_NO_SPACE is about the camera's card.
_ERRNO = {
    gp.GP_ERROR_FILE_NOT_FOUND: errno.ENOENT,
    gp.GP_ERROR_DIRECTORY_NOT_FOUND: errno.ENOENT,
    gp.GP_ERROR_CAMERA_BUSY: errno.EBUSY,
    gp.GP_ERROR_IO_USB_CLAIM: errno.EBUSY,  # another program (gvfs, gphotofs) holds it
    gp.GP_ERROR_IO_LOCK: errno.EBUSY,
    gp.GP_ERROR_NO_MEMORY: errno.ENOMEM,
    gp.GP_ERROR_NOT_SUPPORTED: errno.EOPNOTSUPP,
    gp.GP_ERROR_CANCEL: errno.ECANCELED,
    gp.GP_ERROR_BAD_PARAMETERS: errno.EINVAL,
}


def safe_component(name: str) -> bool:
    """True for a single, ordinary path component as a camera may name a folder or file."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


class CameraSource:
    """A camera on a gphoto2 port (`usb:001,004`, or `disk:/some/dir` for Directory Browse),
    read without ever writing to it. See the module docstring for the guarantees."""

    def __init__(self, port: str, model: str | None = None, *, chunk_size: int = CHUNK
                 ) -> None:
        self.port = port
        self.description = f"{model or 'camera'} ({port})"
        self._chunk = chunk_size
        self._ring = BufferRing(chunk_size)
        self._disk_root = port[len("disk:"):] if port.startswith("disk:") else None
        self._io_failures = 0
        self._context = gp.Context()
        self._camera: gp.Camera | None = None
        if self._disk_root is not None and not os.path.isdir(self._disk_root):
            raise OSError(errno.ENODEV, f"no camera: {self._disk_root} is not a folder")
        camera = gp.Camera()
        try:
            ports = gp.PortInfoList()
            ports.load()
            camera.set_port_info(ports[ports.lookup_path(port)])
            if model is None:
                model = self._detect_model()
            abilities = gp.CameraAbilitiesList()
            abilities.load(self._context)
            try:
                index = abilities.lookup_model(model)
            except gp.GPhoto2Error:
                raise OSError(errno.ENODEV, f"libgphoto2 knows no camera model {model!r}"
                              ) from None
            camera.set_abilities(abilities[index])
            camera.init(self._context)
        except gp.GPhoto2Error as exc:
            raise self._error(exc, f"could not open the camera on {port}") from exc
        self._camera = camera
        self.description = f"{model} ({port})"

    def _detect_model(self) -> str:
        if self._disk_root is not None:
            return DIRECTORY_BROWSE
        found = gp.Camera.autodetect(self._context)
        for i in range(found.count()):
            if found.get_value(i) == self.port:
                return str(found.get_name(i))
        raise OSError(errno.ENODEV, f"no camera answers on {self.port}")

    # -- listing ------------------------------------------------------------------------

    def scan(self, extra_clutter: tuple[str, ...] = ()) -> Scan:
        """List the camera's importable files; clutter, unknown and unsafe names accounted for.

        Raises OSError(ENODEV) when the camera goes away during the listing.
        """
        camera = self._open_camera()
        result = Scan()
        self._scan_folder(camera, "/", b"", 0, result, extra_clutter)
        result.files.sort(key=lambda f: f.rel)
        return result

    def _scan_folder(self, camera: gp.Camera, folder: str, prefix: bytes, depth: int,
                     result: Scan, extra_clutter: tuple[str, ...]) -> None:
        where = prefix.rstrip(b"/") or b"."
        try:
            files = camera.folder_list_files(folder, self._context)
            folders = camera.folder_list_folders(folder, self._context)
        except gp.GPhoto2Error as exc:
            error = self._error(exc, f"could not list {folder} on {self.description}")
            if error.errno == errno.ENODEV:
                raise error from exc
            result.errors.append((where, f"unreadable_folder: {error.strerror}"))
            return
        for name, rel in self._names(files, prefix, result):
            if is_clutter(name, extra_clutter):
                result.skipped.append((rel, "clutter"))
                continue
            kind = kind_of(name)
            if kind is None:
                result.unknown.append(rel)
                continue
            try:
                info = camera.file_get_info(folder, name, self._context).file
            except gp.GPhoto2Error as exc:
                error = self._error(exc, f"could not get the size of {name}")
                if error.errno == errno.ENODEV:
                    raise error from exc
                result.errors.append((rel, f"unreadable: {error.strerror}"))
                continue
            if not info.fields & gp.GP_FILE_INFO_SIZE:
                result.errors.append((rel, "unreadable: the camera did not give its size"))
                continue
            mtime = info.mtime if info.fields & gp.GP_FILE_INFO_MTIME else 0
            result.files.append(SourceFile(rel, int(info.size), int(mtime) * 10**9, kind))
        for name, rel in self._names(folders, prefix, result):
            if is_clutter(name, extra_clutter, at_root=not prefix):
                result.skipped.append((rel, "clutter"))
            elif depth + 1 >= MAX_DEPTH:
                result.skipped.append((rel, "too_deep"))
            else:
                child = folder.rstrip("/") + "/" + name
                self._scan_folder(camera, child, rel + b"/", depth + 1, result, extra_clutter)

    @staticmethod
    def _names(listing: gp.CameraList, prefix: bytes, result: Scan
               ) -> list[tuple[str, bytes]]:
        """The (name, rel) pairs of a listing whose names are safe; the rest recorded."""
        out = []
        for i in range(listing.count()):
            try:
                name = str(listing.get_name(i))
            except UnicodeDecodeError as exc:  # python-gphoto2 needs UTF-8 names
                result.skipped.append((prefix + bytes(exc.object), "undecodable_name"))
                continue
            rel = prefix + name.encode("utf-8", "backslashreplace")
            if safe_component(name):
                out.append((name, rel))
            else:
                result.skipped.append((rel, "unsafe_name"))
        return sorted(out)

    # -- reading ------------------------------------------------------------------------

    def read(self, entry: SourceFile, sink: Sink) -> int:
        """Push the entry's bytes into `sink` chunk by chunk; return the count.

        OSError(ENODEV) when the camera is gone, ENOENT when the file is, EIO when the count
        differs from the listed size or a transfer failed.
        """
        camera = self._open_camera()
        folder, name = _locate(entry.rel)
        label = f"{entry.rel.decode('utf-8', 'backslashreplace')} from {self.description}"
        try:
            count = self._read_parts(camera, folder, name, entry.size, sink)
            if count is None:
                count = self._read_piped(camera, folder, name, sink)
        except gp.GPhoto2Error as exc:
            raise self._error(exc, f"could not read {label}", (folder, name)) from exc
        self._io_failures = 0
        if count != entry.size:
            raise SourceChangedError(
                errno.EIO, f"read {count} bytes of {label}, the camera listed {entry.size}")
        return count

    def _read_parts(self, camera: gp.Camera, folder: str, name: str, size: int,
                    sink: Sink) -> int | None:
        """Read with partial reads into one reused buffer; None when the camlib has none."""
        offset = 0
        while offset < size:
            view = memoryview(self._ring.next())
            want = min(len(view), size - offset)
            try:
                n = camera.file_read(folder, name, gp.GP_FILE_TYPE_NORMAL, offset, view[:want],
                                     self._context)
            except gp.GPhoto2Error as exc:
                if offset == 0 and exc.code == gp.GP_ERROR_NOT_SUPPORTED:
                    return None
                raise
            if n <= 0:
                break
            sink(view[:n])
            offset += n
        return offset

    def _read_piped(self, camera: gp.Camera, folder: str, name: str, sink: Sink) -> int:
        """The fallback for camlibs without partial reads (Directory Browse among them).

        `file_get` into a CameraFile made from a pipe's write end: libgphoto2 writes each
        block to the pipe as it gets it (gp_file_append on a file-descriptor CameraFile), so
        memory stays at one pipe and one chunk whatever the file's size. The download runs
        on a helper thread (python-gphoto2 releases the GIL during libgphoto2 calls); this
        thread drains the pipe into the sink, and waits for the helper in every case.
        """
        r, w = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # fewer, larger chunks; the default works too
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        failure: list[BaseException] = []
        helper = threading.Thread(target=self._download, args=(camera, folder, name, w, failure),
                                  name=f"gphoto2 download {name}", daemon=True)
        try:
            helper.start()
        except BaseException:
            os.close(r)
            os.close(w)
            raise
        total = 0
        try:
            view = memoryview(self._ring.next())
            filled = 0
            while True:
                n = os.readv(r, [view[filled:]])
                if n == 0:
                    break
                filled += n
                if filled == len(view):
                    sink(view)
                    total += filled
                    filled = 0
                    view = memoryview(self._ring.next())
            if filled:
                sink(view[:filled])
                total += filled
        finally:
            # If the sink failed, the helper's next write gets EPIPE (Python ignores
            # SIGPIPE), libgphoto2 gives up or runs to the end, and the helper returns.
            os.close(r)
            helper.join()
        if failure:
            raise failure[0]
        return total

    def _download(self, camera: gp.Camera, folder: str, name: str, w: int,
                  failure: list[BaseException]) -> None:
        try:
            camera_file = gp.check_result(gp.gp_file_new_from_fd(w))
        except BaseException as exc:
            os.close(w)
            failure.append(exc)
            return
        # From here the CameraFile owns `w` and closes it when freed, which is what ends
        # the reader's loop: it is freed in `finally`, before any exception travels.
        try:
            # Passing our own CameraFile is deprecated in python-gphoto2 2.5+ (still there
            # in 2.6); it is the only way to have libgphoto2 stream a whole-file download.
            camera.file_get(folder, name, gp.GP_FILE_TYPE_NORMAL, camera_file, self._context)
        except BaseException as exc:
            failure.append(exc)
        finally:
            del camera_file

    # -- errors -------------------------------------------------------------------------

    def _error(self, exc: gp.GPhoto2Error, what: str,
               file: tuple[str, str] | None = None) -> OSError:
        """The OSError for a libgphoto2 error: ENODEV when the camera is gone."""
        message = f"{what}: {exc.string}"
        if exc.code in _GONE or (exc.code in _DEVICE_IO and not self._present()):
            return OSError(errno.ENODEV, f"{message} (the camera is gone)")
        if exc.code in _DEVICE_IO:
            if file is not None and self._disk_root is not None and not os.path.lexists(
                    os.path.join(self._disk_root, file[0].lstrip("/"), file[1])):
                return OSError(errno.ENOENT, f"{message} (the file is gone)")
            self._io_failures += 1
            if self._io_failures >= MAX_IO_FAILURES:
                return OSError(errno.ENODEV, f"{message} (the camera stopped responding)")
            return OSError(errno.EIO, message)
        return OSError(_ERRNO.get(exc.code, errno.EIO), message)

    def _present(self) -> bool:
        """Whether the camera's port is still there. True when that cannot be known."""
        if self._disk_root is not None:
            return os.path.isdir(self._disk_root)
        if not self.port.startswith("usb:") or "," not in self.port:
            return True  # ptpip:, serial:, or "usb:" meaning whichever camera is found
        try:
            ports = gp.PortInfoList()
            ports.load()
        except gp.GPhoto2Error:
            return True
        return any(ports[i].get_path() == self.port for i in range(len(ports)))

    # -- lifetime -----------------------------------------------------------------------

    def _open_camera(self) -> gp.Camera:
        if self._camera is None:
            raise OSError(errno.EBADF, f"{self.description} is closed")
        return self._camera

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            with contextlib.suppress(gp.GPhoto2Error):  # an unplugged camera cannot say bye
                camera.exit(self._context)

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _locate(rel: bytes) -> tuple[str, str]:
    """The camera folder and file name of a scanned entry."""
    try:
        parts = rel.decode("utf-8").split("/")
    except UnicodeDecodeError:
        raise OSError(errno.EINVAL, "not a path this camera listed") from None
    if not all(safe_component(p) for p in parts):
        raise OSError(errno.EINVAL, "not a path this camera listed")
    return "/" + "/".join(parts[:-1]), parts[-1]
