"""Array libraries at densecrf's boundary: the one place that converts them.

Host side: anything numpy can read (numpy arrays, lists, torch CPU tensors)
becomes a C-contiguous float32 numpy array (:func:`host`), never the
caller's buffer to write. Device side: a :class:`Place` says where a call
runs (the array library, the CUDA device, the stream) and turns each input
into a :class:`Buf`, a C-contiguous device array of the place's dtype (float32,
or float64 when the caller asked for it) and its raw pointer,
without a copy through the host; it allocates outputs in the same library
and hands them back as that library's arrays:

- torch CUDA tensors: torch's current stream on the tensors' device;
- CuPy arrays: CuPy's current stream; other ``__cuda_array_interface__``
  arrays are viewed through CuPy (or torch) to hold the result;
- DLPack CUDA arrays (``__dlpack__``): viewed through torch;
- densecrf's own device arrays (the CUDA backend's ``DeviceArray``, passed
  as ``memory``): the device's legacy default stream;
- numpy (host) arrays on a CUDA device: uploaded into ``memory`` arrays on
  the legacy default stream, results downloaded into numpy.

Nothing here imports torch or CuPy unless the caller's arrays come from them.
"""

from __future__ import annotations

import sys

import numpy as np

from . import _checks

F32 = 4  # bytes per float32


def torch_module():
    """torch if the caller has imported it, else None (never imports it)."""
    return sys.modules.get("torch")


def is_torch(x) -> bool:
    t = torch_module()
    return t is not None and isinstance(x, t.Tensor)


def is_cupy(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def is_cpu(device) -> bool:
    """Whether ``device`` ('cpu', None, 'cuda', 'cuda:N', an ordinal, a torch.device) names the host."""
    return device is None or str(device) == "cpu"


def is_float(x) -> bool:
    """Whether ``x`` (any array a densecrf call takes, or a nested list) holds floating-point values."""
    if is_torch(x):
        return bool(x.dtype.is_floating_point)
    dt = getattr(x, "dtype", None)
    try:
        return np.dtype(dt if dt is not None else np.asarray(x).dtype).kind == "f"
    except TypeError:  # a dtype numpy does not know
        return False


def parse_device(device) -> int:
    """The CUDA ordinal of 'cuda', 'cuda:N', N or None (0)."""
    if device is None:
        return 0
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool):
        return int(device)
    s = str(device)
    if s == "cuda":
        return 0
    if s.startswith("cuda:") and s[5:].isdigit():
        return int(s[5:])
    raise ValueError(f"device must be 'cuda', 'cuda:N' or an integer ordinal, got {device!r}")


def host(x, name: str, *, finite: bool = True) -> np.ndarray:
    """x as a C-contiguous float32 numpy array (a copy unless x already is one; never written)."""
    return _checks.as_f32(x, name, finite=finite)


def host64(x, name: str) -> np.ndarray:
    """x as a C-contiguous finite float64 numpy array (a copy unless x already is one; never written)."""
    return _checks.as_f64(x, name)


def shape_of(x) -> tuple:
    """The shape of any array of a supported library, without converting it."""
    if hasattr(x, "shape") and not isinstance(x, np.ndarray):
        return tuple(int(s) for s in x.shape)
    return tuple(np.shape(x))


def torch_host(t):
    """A float32 contiguous CPU tensor's numpy view (detached; a copy for other dtypes)."""
    return t.detach().to(torch_module().float32).contiguous().numpy()


def torch_host64(t):
    """A float64 contiguous CPU tensor's numpy view (detached; a copy for other dtypes)."""
    return t.detach().to(torch_module().float64).contiguous().numpy()


class Buf:
    """A C-contiguous device array of float32 (or float64: ``itemsize`` 8): the
    owning object and its raw pointer."""

    __slots__ = ("itemsize", "obj", "ptr", "shape")

    def __init__(self, obj, ptr: int, shape, itemsize: int = F32):
        self.obj = obj
        self.ptr = int(ptr)
        self.shape = tuple(int(s) for s in shape)
        self.itemsize = int(itemsize)

    def at(self, offset: int) -> int:
        """The address ``offset`` values into the buffer."""
        return self.ptr + offset * self.itemsize

    def view(self, shape) -> Buf:
        """The same memory with another shape of as many values."""
        return Buf(self.obj, self.ptr, shape, self.itemsize)


class Place:
    """Where a device call runs: the array library ('numpy', 'torch', 'cupy' or
    'raw' for ``memory`` arrays), the device ordinal, the stream, and the dtype
    of the computation (float32, or float64 when the caller asks for it):
    inputs are converted to it, outputs allocated in it.

    ``memory``: the backend's own device array type, used for numpy inputs and
    outputs and for 'raw' ones. It provides ``memory(shape, device, dtype)``,
    ``.ptr``, ``.shape``, ``.device``, ``.upload(host, stream)``,
    ``.download(out, stream)`` and ``.copy(stream)``.
    """

    def __init__(self, kind: str, device: int, memory, torch_device=None, dtype=np.float32):
        self.dtype = _checks.dtype_arg(dtype)
        self.f64 = self.dtype == np.float64
        self.kind = kind
        self.device = device
        self.memory = memory
        self.torch_device = torch_device
        if kind == "torch":
            self.stream = int(torch_module().cuda.current_stream(torch_device).cuda_stream)
        elif kind == "cupy":
            import cupy

            with cupy.cuda.Device(device):
                self.stream = int(cupy.cuda.get_current_stream().ptr)
        else:
            self.stream = 0

    # -- inputs -----------------------------------------------------------
    def _buf(self, obj, ptr: int, shape) -> Buf:
        return Buf(obj, ptr, shape, self.dtype.itemsize)

    def host(self, x, name: str, *, finite: bool = True) -> np.ndarray:
        """x as a C-contiguous host array of this place's dtype (:func:`host` or
        :func:`host64`; float64 ones are always checked finite, as the float64
        CPU backend's)."""
        return host64(x, name) if self.f64 else host(x, name, finite=finite)

    def put(self, x, name: str, *, finite: bool = True) -> Buf:
        """x as a C-contiguous device array of this place's dtype (no host copy for device inputs)."""
        if self.kind == "torch":
            torch = torch_module()
            if not is_torch(x):
                if hasattr(x, "__cuda_array_interface__"):
                    x = torch.as_tensor(x, device=self.torch_device)  # a view, no copy
                elif hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
                    x = torch.from_dlpack(x)
                else:
                    x = torch.as_tensor(self.host(x, name, finite=finite), device=self.torch_device)
            if not x.is_cuda or x.device.index != self.device:
                raise ValueError(f"{name} is on {x.device}, expected cuda:{self.device} like the other arrays")
            if x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"{name} has dtype {x.dtype}; expected real values")
            x = x.detach().to(torch.float64 if self.f64 else torch.float32).contiguous()
            return self._buf(x, x.data_ptr(), x.shape)
        if self.kind == "raw":
            if isinstance(x, self.memory):
                if x.device != self.device:
                    raise ValueError(f"{name} is on cuda:{x.device}, expected cuda:{self.device} like the other arrays")
                if np.dtype(x.dtype) != self.dtype:
                    raise TypeError(
                        f"{name} is a {np.dtype(x.dtype).name} DeviceArray, but this call computes in "
                        f"{self.dtype.name}: pass dtype={np.dtype(x.dtype).name} or convert the array"
                    )
                return self._buf(x, x.ptr, x.shape)
            if hasattr(x, "__cuda_array_interface__") or is_torch(x):
                raise TypeError(f"{name}: DeviceArray inputs cannot be mixed with other libraries' device arrays")
            return self.upload(self.host(x, name, finite=finite))
        if self.kind == "cupy":
            import cupy

            with cupy.cuda.Device(self.device):
                if isinstance(x, np.ndarray) or not hasattr(x, "__cuda_array_interface__"):
                    x = self.host(x, name, finite=finite)
                a = cupy.ascontiguousarray(cupy.asarray(x, dtype=cupy.float64 if self.f64 else cupy.float32))
            return self._buf(a, a.data.ptr, a.shape)
        return self.upload(self.host(x, name, finite=finite))

    def upload(self, a: np.ndarray) -> Buf:
        """A host C-contiguous array (converted to this place's dtype) copied into a new
        ``memory`` array on this place's stream."""
        a = np.ascontiguousarray(a, dtype=self.dtype)
        d = self.memory(a.shape, self.device, self.dtype)
        if a.size:
            d.upload(a, self.stream)
        return self._buf(d, d.ptr, a.shape)

    def shape_of(self, x) -> tuple:
        return shape_of(x)

    def peak(self, b: Buf) -> float:
        """The largest value of a buffer, 0 for an empty one (on a device: one reduction and a wait for it)."""
        if not all(b.shape):
            return 0.0
        if self.kind in ("torch", "cupy"):
            return float(b.obj.max())
        out = np.empty(b.shape, dtype=self.dtype)
        b.obj.download(out, self.stream)
        return float(out.max())

    # -- outputs ----------------------------------------------------------
    def empty(self, shape) -> Buf:
        """A new uninitialised device array of this place's dtype in its library."""
        shape = tuple(int(s) for s in shape)
        if self.kind == "torch":
            torch = torch_module()
            t = torch.empty(shape, dtype=torch.float64 if self.f64 else torch.float32, device=self.torch_device)
            return self._buf(t, t.data_ptr(), shape)
        if self.kind == "cupy":
            import cupy

            with cupy.cuda.Device(self.device):
                a = cupy.empty(shape, dtype=cupy.float64 if self.f64 else cupy.float32)
            return self._buf(a, a.data.ptr, shape)
        a = self.memory(shape, self.device, self.dtype)
        return self._buf(a, a.ptr, shape)

    def copy(self, b: Buf) -> Buf:
        """A fresh device copy of b (so that the caller's array is never written)."""
        if self.kind == "torch":
            t = b.obj.clone()
            return self._buf(t, t.data_ptr(), b.shape)
        if self.kind == "cupy":
            a = b.obj.copy()
            return self._buf(a, a.data.ptr, b.shape)
        if self.kind == "raw":
            a = b.obj.copy(self.stream)
            return self._buf(a, a.ptr, b.shape)
        return b  # numpy inputs were uploaded into a fresh buffer already

    def result(self, b: Buf):
        """The caller's array of a buffer: the device array itself (reshaped to
        ``b.shape``), or a numpy copy for numpy callers."""
        if self.kind == "numpy":
            out = np.empty(b.shape, dtype=self.dtype)
            if out.size:
                b.obj.download(out, self.stream)
            return out
        obj = b.obj
        if tuple(obj.shape) != b.shape:
            obj = obj.reshape(b.shape)
        return obj

    def moveaxis(self, b: Buf, src: int, dst: int) -> Buf:
        """A C-contiguous copy with axis src moved to dst, on the device."""
        if src % len(b.shape) == dst % len(b.shape):
            return b
        if self.kind == "torch":
            t = torch_module().movedim(b.obj, src, dst).contiguous()
            return self._buf(t, t.data_ptr(), t.shape)
        if self.kind == "cupy":
            import cupy

            with cupy.cuda.Device(self.device):
                a = cupy.ascontiguousarray(cupy.moveaxis(b.obj, src, dst))
            return self._buf(a, a.data.ptr, a.shape)
        raise ValueError("DeviceArray inputs need the label axis last (channel_axis=-1)")


def place_of(arrays, device, memory, dtype=np.float32) -> Place:
    """The place of the first device array among ``arrays``, else numpy on ``device``.

    ``memory``: the backend's own device array type (see :class:`Place`);
    ``dtype``: the computation's, float32 (the default) or float64.
    """
    for x in arrays:
        if isinstance(x, memory):
            return Place("raw", x.device, memory, dtype=dtype)
        if is_torch(x):
            if not x.is_cuda:
                continue
            torch = torch_module()
            index = x.device.index if x.device.index is not None else torch.cuda.current_device()
            return Place("torch", index, memory, x.device, dtype=dtype)
        if hasattr(x, "__cuda_array_interface__"):
            if is_cupy(x) or "cupy" in sys.modules or _importable("cupy"):
                import cupy

                dev = x.device.id if is_cupy(x) else cupy.cuda.Device().id
                return Place("cupy", int(dev), memory, dtype=dtype)
            if torch_module() is not None or _importable("torch"):
                import torch

                t = torch.as_tensor(x, device="cuda")
                return Place("torch", t.device.index, memory, t.device, dtype=dtype)
            raise TypeError(
                f"{type(x).__name__} is a CUDA array, but neither CuPy nor torch is installed to hold "
                "the result; install one of them or pass numpy arrays"
            )
        if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__") and not isinstance(x, np.ndarray):
            dev_type, dev_id = x.__dlpack_device__()
            if int(dev_type) == 2:  # kDLCUDA
                if not _importable("torch"):
                    raise TypeError(f"{type(x).__name__} is a DLPack CUDA array; install torch or CuPy to pass it")
                import torch

                return Place("torch", int(dev_id), memory, torch.device("cuda", int(dev_id)), dtype=dtype)
    return Place("numpy", parse_device(device), memory, dtype=dtype)


def _importable(name: str) -> bool:
    if name in sys.modules:
        return True
    import importlib.util

    return importlib.util.find_spec(name) is not None
