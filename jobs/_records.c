/* Demux's record cutting: a batch's chunks -> one Arrow binary array of their records, in one pass.
 *
 * cut(datas, ends, starts) takes each chunk's data (any buffer), its record_ends (a list, or None for
 * newline ends) and its stream offset, and returns (offsets, data, chunk, offset): the records as an
 * Arrow binary array's int32 offsets and data, each record's chunk index (int32) and stream offset
 * (int64).  Records are cut as Chunk.record_spans cuts them; a record ending in "\n" loses it and a
 * "\r" before it.  jobs.records.chunk_records wraps it; its Arrow-kernel code runs where this is not
 * built, and tests/jobs/test_records.py holds the two to the same arrays.
 *
 * Why C: the kernels copy each chunk into an array, split it, and compute offsets in six more passes;
 * here each record is found by memchr and copied once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int32_t *offsets;
    int32_t *chunk;
    int64_t *offset;
    Py_ssize_t n, cap;
    char *data;
    Py_ssize_t len;
} Cut;

static int cut_add(Cut *c, const char *p, Py_ssize_t len, int32_t chunk, int64_t offset) {
    if (c->n + 1 >= c->cap) {
        Py_ssize_t cap = c->cap * 2;
        int32_t *o = PyMem_Realloc(c->offsets, (size_t)(cap + 1) * sizeof(int32_t));
        if (o) c->offsets = o;
        int32_t *k = PyMem_Realloc(c->chunk, (size_t)cap * sizeof(int32_t));
        if (k) c->chunk = k;
        int64_t *s = PyMem_Realloc(c->offset, (size_t)cap * sizeof(int64_t));
        if (s) c->offset = s;
        if (!o || !k || !s) return -1;
        c->cap = cap;
    }
    Py_ssize_t keep = len;
    if (keep && p[keep - 1] == '\n') {
        keep--;
        if (keep && p[keep - 1] == '\r') keep--;
    }
    memcpy(c->data + c->len, p, (size_t)keep);
    c->len += keep;
    c->chunk[c->n] = chunk;
    c->offset[c->n] = offset;
    c->offsets[++c->n] = (int32_t)c->len;
    return 0;
}

static PyObject *cut(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *datas, *ends_list, *starts;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &datas, &PyList_Type, &ends_list, &PyList_Type, &starts))
        return NULL;
    Py_ssize_t m = PyList_GET_SIZE(datas);
    if (PyList_GET_SIZE(ends_list) != m || PyList_GET_SIZE(starts) != m) {
        PyErr_SetString(PyExc_ValueError, "datas, ends and starts differ in length");
        return NULL;
    }
    Py_buffer *bufs = PyMem_Calloc((size_t)m + 1, sizeof(Py_buffer));
    Py_ssize_t got = 0, total = 0;
    PyObject *result = NULL, *data = NULL;
    Cut c = {0};
    if (bufs == NULL) return PyErr_NoMemory();
    for (; got < m; got++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(datas, got), &bufs[got], PyBUF_SIMPLE) < 0) goto done;
        total += bufs[got].len;
    }
    if (total > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "records of more than 2 GiB in one batch");
        goto done;
    }
    c.cap = 1024;
    c.offsets = PyMem_Malloc((size_t)(c.cap + 1) * sizeof(int32_t));
    c.chunk = PyMem_Malloc((size_t)c.cap * sizeof(int32_t));
    c.offset = PyMem_Malloc((size_t)c.cap * sizeof(int64_t));
    data = PyBytes_FromStringAndSize(NULL, total);
    if (!c.offsets || !c.chunk || !c.offset || !data) goto nomem;
    c.data = PyBytes_AS_STRING(data);
    c.offsets[0] = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        const char *p = bufs[i].buf;
        Py_ssize_t n = bufs[i].len, prev = 0;
        int64_t start = PyLong_AsLongLong(PyList_GET_ITEM(starts, i));
        if (start == -1 && PyErr_Occurred()) goto done;
        PyObject *ends = PyList_GET_ITEM(ends_list, i);
        if (ends == Py_None) {
            while (prev < n) {
                const char *nl = memchr(p + prev, '\n', (size_t)(n - prev));
                Py_ssize_t end = nl ? nl - p + 1 : n;
                if (cut_add(&c, p + prev, end - prev, (int32_t)i, start + prev) < 0) goto nomem;
                prev = end;
            }
            continue;
        }
        if (!PyList_Check(ends)) {
            PyErr_SetString(PyExc_TypeError, "record ends must be a list or None");
            goto done;
        }
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(ends); k++) {
            long long end = PyLong_AsLongLong(PyList_GET_ITEM(ends, k));
            if (end == -1 && PyErr_Occurred()) goto done;
            if (prev < end && end <= n) {
                if (cut_add(&c, p + prev, (Py_ssize_t)end - prev, (int32_t)i, start + prev) < 0) goto nomem;
                prev = (Py_ssize_t)end;
            }
        }
        if (prev < n && cut_add(&c, p + prev, n - prev, (int32_t)i, start + prev) < 0) goto nomem;
    }
    if (_PyBytes_Resize(&data, c.len) < 0) goto done;
    result = Py_BuildValue("(y#Oy#y#)", (const char *)c.offsets, (c.n + 1) * (Py_ssize_t)sizeof(int32_t), data,
                           (const char *)c.chunk, c.n * (Py_ssize_t)sizeof(int32_t), (const char *)c.offset,
                           c.n * (Py_ssize_t)sizeof(int64_t));
    goto done;
nomem:
    if (!PyErr_Occurred()) PyErr_NoMemory();
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(c.offsets);
    PyMem_Free(c.chunk);
    PyMem_Free(c.offset);
    Py_XDECREF(data);
    return result;
}

static PyMethodDef methods[] = {
    {"cut", cut, METH_VARARGS, "cut(datas, ends, starts) -> (offsets, data, chunk, offset)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_records", "Demux's record cutting (see _records.c).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
