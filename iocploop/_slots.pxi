# Compiled access to a Python class's __slots__ (included by _scheduler.pyx).
#
# TCPTransport keeps its state in __slots__ (a Python class: it must be an
# asyncio.Transport).  Reading a slot by name costs a type lookup and a
# descriptor call, about 25 ns; the compiled hot paths read some twenty per
# request.  A slot is a PyObject * at a fixed offset in the instance, which
# the class's member descriptor records: SlotLayout looks each offset up
# once, and the paths read and write at it as at a C struct's field.  Every
# entry point checks the object's class first (SlotLayout.check).

cdef extern from *:
    """
    #include "structmember.h"   /* PyMemberDef (Python.h has it from 3.12) */
    /* The offset of a __slots__ member (member descriptor of an object
       slot, type 16: T_OBJECT_EX / Py_T_OBJECT_EX), or -1. */
    static Py_ssize_t ioc_slot_offset(PyObject *descr)
    {
        PyMemberDef *m;
        if (Py_TYPE(descr) != &PyMemberDescr_Type)
            return -1;
        m = ((PyMemberDescrObject *)descr)->d_member;
        return m->type == 16 ? m->offset : -1;
    }
    """
    Py_ssize_t ioc_slot_offset(PyObject *descr)


cdef Py_ssize_t _slot_offset(type cls, str name) except -1:
    for klass in cls.__mro__:
        descr = klass.__dict__.get(name)
        if descr is not None:
            offset = ioc_slot_offset(<PyObject *>descr)
            if offset < 0:
                break
            return offset
    raise TypeError(f"{cls.__name__}.{name} is not a __slots__ member")


cdef object _unset_slot(object obj):
    raise AttributeError(f"{type(obj).__name__!r} object has an unset slot")


cdef inline object slot(object obj, Py_ssize_t offset):
    """obj's slot at offset (AttributeError while it is unset, as Python's)."""
    cdef PyObject *value = (<PyObject **>((<char *><PyObject *>obj) + offset))[0]
    if value is NULL:
        return _unset_slot(obj)
    return <object>value


cdef inline void set_slot(object obj, Py_ssize_t offset, object value):
    cdef PyObject **at = <PyObject **>((<char *><PyObject *>obj) + offset)
    cdef PyObject *old = at[0]
    Py_INCREF(value)
    at[0] = <PyObject *>value
    Py_XDECREF(old)
