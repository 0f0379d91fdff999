"""Skip one Java-serialised object (a JCEKS secret-key entry) without building it. Pure and bounded.

A JCEKS store writes each secret key as a ``SealedObject`` through its own ``ObjectOutputStream``: the store's
later entries start where that object ends, and nothing says its length. This reader walks the grammar of the
Java Object Serialization Specification (chapter 6) only far enough to find the end: every length and count is
checked against the bytes that remain, and nesting is capped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_MAGIC = b"\xac\xed\x00\x05"
_NULL, _REFERENCE, _CLASSDESC, _OBJECT, _STRING, _ARRAY, _CLASS = 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76
_BLOCKDATA, _ENDBLOCKDATA, _BLOCKDATALONG, _LONGSTRING, _PROXYCLASSDESC, _ENUM = 0x77, 0x78, 0x7A, 0x7C, 0x7D, 0x7E
_BASE_HANDLE = 0x7E0000
_WRITE_METHOD, _SERIALIZABLE, _EXTERNALIZABLE, _BLOCK_DATA = 0x01, 0x02, 0x04, 0x08
_PRIMITIVE_SIZES = {"B": 1, "C": 2, "D": 8, "F": 4, "I": 4, "J": 8, "S": 2, "Z": 1}
_MAX_DEPTH = 32


class SerialError(ValueError):
    """The bytes are not a Java-serialised object this reader can walk."""


@dataclass
class _ClassDesc:
    name: str
    flags: int
    fields: list[str] = field(default_factory=list)  # type codes, in stream order
    parent: _ClassDesc | None = None


class _Walker:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos
        self.handles: list[_ClassDesc | None] = []
        self.depth = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise SerialError(f"{size} bytes claimed at {self.pos}, {len(self.data) - self.pos} remain")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def utf(self) -> str:
        return self.take(self.number(2)).decode("utf-8", "replace")

    def content(self) -> _ClassDesc | None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise SerialError("nested too deep")
        try:
            return self._content(self.number(1))
        finally:
            self.depth -= 1

    def _content(self, tag: int) -> _ClassDesc | None:
        if tag in (_NULL, _REFERENCE, _CLASSDESC, _PROXYCLASSDESC):
            return self._desc_after(tag)
        if tag in (_STRING, _LONGSTRING):
            self.handles.append(None)
            self.take(self.number(2 if tag == _STRING else 8))
        elif tag in (_BLOCKDATA, _BLOCKDATALONG):
            self.take(self.number(1 if tag == _BLOCKDATA else 4))
        elif tag == _ARRAY:
            self._array(self.desc())
        elif tag == _OBJECT:
            self._object(self.desc())
        elif tag == _CLASS:
            self.desc()
            self.handles.append(None)
        elif tag == _ENUM:
            self.desc()
            self.handles.append(None)
            self.content()
        else:
            raise SerialError(f"type code {tag:#x} at {self.pos - 1}")
        return None

    def desc(self) -> _ClassDesc | None:
        return self._desc_after(self.number(1))

    def _desc_after(self, tag: int) -> _ClassDesc | None:
        if tag == _NULL:
            return None
        if tag == _REFERENCE:
            handle = self.number(4) - _BASE_HANDLE
            if not 0 <= handle < len(self.handles):
                raise SerialError("reference to an unknown handle")
            return self.handles[handle]
        if tag == _PROXYCLASSDESC:
            self.handles.append(None)
            for _ in range(self._count(self.number(4), 2)):
                self.utf()
            self.annotation()
            return self.desc()
        if tag != _CLASSDESC:
            raise SerialError(f"expected a class description, found {tag:#x}")
        desc = _ClassDesc(self.utf(), 0)
        self.take(8)  # serialVersionUID
        self.handles.append(desc)
        desc.flags = self.number(1)
        for _ in range(self._count(self.number(2), 3)):
            code = chr(self.number(1))
            self.utf()
            if code in "L[":
                self.content()  # the field's class name, a string or a reference to one
            elif code not in _PRIMITIVE_SIZES:
                raise SerialError(f"field type {code!r}")
            desc.fields.append(code)
        self.annotation()
        desc.parent = self.desc()
        return desc

    def _count(self, count: int, least: int) -> int:
        if count * least > len(self.data) - self.pos:
            raise SerialError(f"{count} items claimed, {len(self.data) - self.pos} bytes remain")
        return count

    def annotation(self) -> None:
        while self.data[self.pos : self.pos + 1] != bytes([_ENDBLOCKDATA]):
            self.content()
        self.pos += 1

    def _array(self, desc: _ClassDesc | None) -> None:
        self.handles.append(None)
        size = self.number(4)
        code = desc.name[1:2] if desc is not None else ""
        if code in _PRIMITIVE_SIZES:
            self.take(size * _PRIMITIVE_SIZES[code])
            return
        for _ in range(self._count(size, 1)):
            self.content()

    def _object(self, desc: _ClassDesc | None) -> None:
        self.handles.append(None)
        chain = []
        while desc is not None:
            chain.append(desc)
            desc = desc.parent
        for cls in reversed(chain):  # the top superclass's data comes first
            if cls.flags & _EXTERNALIZABLE:
                if not cls.flags & _BLOCK_DATA:
                    raise SerialError("externalizable without block data")
                self.annotation()
                continue
            for code in cls.fields:
                if code in _PRIMITIVE_SIZES:
                    self.take(_PRIMITIVE_SIZES[code])
                else:
                    self.content()
            if cls.flags & _WRITE_METHOD:
                self.annotation()


def skip_object(data: bytes, pos: int) -> int:
    """Return where the serialised object (with its stream header) starting at ``pos`` ends; raise SerialError."""
    if data[pos : pos + 4] != _MAGIC:
        raise SerialError("not a Java serialisation stream")
    walker = _Walker(data, pos + 4)
    walker.content()
    return walker.pos
