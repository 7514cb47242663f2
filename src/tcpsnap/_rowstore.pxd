# The row group store's compiled parts that tcpsnap._quiet (a lone marker's whole
# write, in one call) uses from C.

cdef class Columns:
    cdef Py_buffer *views
    cdef bint *held
    cdef readonly Py_ssize_t n


cdef int repeat_into(Columns values, list dirty, Columns valid, list vdirty, list given, Py_ssize_t row,
                     Py_ssize_t r) except -1
