/* The http source's compiled fast path: a request body cut into lines, each checked to be JSON.
 *
 * split_lines(body, validate) takes a body that ends with b"\n" and returns the end of each line
 * (just past its "\n") as a list.  With validate (the ndjson format) every line must be one JSON text
 * (RFC 8259: a value with optional space, tab or CR around it, strings of valid UTF-8 without raw
 * control characters, escapes of \" \\ \/ \b \f \n \r \t and \uXXXX, nesting up to MAX_DEPTH); it
 * returns None at the first line that is not, or that is blank, and HttpSource.split_records (orjson,
 * then json.loads, per line) decides the whole body: every line this accepts json.loads accepts too,
 * and what json.loads accepts beyond it (NaN, a byte order mark, UTF-8 encoded surrogates, other
 * whitespace) or refuses is decided there, with the line number in the 400 answer.
 * tests/sources/test_http_lines.py holds it to the Python path.
 *
 * Why C: per line the Python path costs a find, a slice, an orjson call and a list append (~1 us:
 * 280k events/s through the agent here, against rsyslog's ~410k).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_DEPTH 512

typedef struct {
    const unsigned char *p, *end; /* end: the line's "\n" */
} Line;

static inline int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\r'; }

static inline void skip_ws(Line *l) {
    while (l->p < l->end && is_ws(*l->p))
        l->p++;
}

static inline int is_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* One UTF-8 sequence of 2-4 bytes starting at p (p[0] >= 0x80): its length, or 0 if not valid UTF-8
 * (overlong forms, surrogates and code points past U+10FFFF are not). */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    Py_ssize_t left = end - p;
    if (c >= 0xc2 && c <= 0xdf)
        return left >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (left < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))
            return 0; /* overlong, or a surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (left < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

static int string(Line *l) { /* at the opening quote */
    const unsigned char *p = l->p + 1, *end = l->end;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') {
            l->p = p + 1;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (p + 1 >= end)
                return 0;
            unsigned char e = p[1];
            if (e == 'u') {
                if (end - p < 6 || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]) || !is_hex(p[5]))
                    return 0;
                p += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't')
                p += 2;
            else
                return 0;
        } else if (c < 0x80)
            p++;
        else {
            int n = utf8_len(p, end);
            if (!n)
                return 0;
            p += n;
        }
    }
    return 0;
}

static int digits(Line *l) {
    const unsigned char *start = l->p;
    while (l->p < l->end && *l->p >= '0' && *l->p <= '9')
        l->p++;
    return l->p > start;
}

static int number(Line *l) {
    if (*l->p == '-')
        l->p++;
    if (l->p >= l->end)
        return 0;
    if (*l->p == '0')
        l->p++;
    else if (!digits(l))
        return 0;
    if (l->p < l->end && *l->p == '.') {
        l->p++;
        if (!digits(l))
            return 0;
    }
    if (l->p < l->end && (*l->p == 'e' || *l->p == 'E')) {
        l->p++;
        if (l->p < l->end && (*l->p == '+' || *l->p == '-'))
            l->p++;
        if (!digits(l))
            return 0;
    }
    return 1;
}

static int literal(Line *l, const char *word, Py_ssize_t n) {
    if (l->end - l->p < n || memcmp(l->p, word, (size_t)n) != 0)
        return 0;
    l->p += n;
    return 1;
}

static int value(Line *l, int depth) {
    if (l->p >= l->end || depth > MAX_DEPTH)
        return 0;
    unsigned char c = *l->p;
    if (c == '"')
        return string(l);
    if (c == '-' || (c >= '0' && c <= '9'))
        return number(l);
    if (c == 't')
        return literal(l, "true", 4);
    if (c == 'f')
        return literal(l, "false", 5);
    if (c == 'n')
        return literal(l, "null", 4);
    if (c == '{' || c == '[') {
        unsigned char close = c == '{' ? '}' : ']';
        l->p++;
        skip_ws(l);
        if (l->p < l->end && *l->p == close) {
            l->p++;
            return 1;
        }
        for (;;) {
            if (c == '{') {
                if (l->p >= l->end || *l->p != '"' || !string(l))
                    return 0;
                skip_ws(l);
                if (l->p >= l->end || *l->p != ':')
                    return 0;
                l->p++;
                skip_ws(l);
            }
            if (!value(l, depth + 1))
                return 0;
            skip_ws(l);
            if (l->p >= l->end)
                return 0;
            if (*l->p == close) {
                l->p++;
                return 1;
            }
            if (*l->p != ',')
                return 0;
            l->p++;
            skip_ws(l);
        }
    }
    return 0;
}

static PyObject *split_lines(PyObject *self, PyObject *args) {
    Py_buffer body;
    int validate;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*p", &body, &validate))
        return NULL;
    const unsigned char *base = body.buf, *p = base, *end = base + body.len;
    if (body.len == 0 || end[-1] != '\n') {
        PyBuffer_Release(&body);
        PyErr_SetString(PyExc_ValueError, "the body must end with a newline");
        return NULL;
    }
    PyObject *ends = PyList_New(0);
    while (ends && p < end) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        if (validate) {
            Line l = {p, nl};
            skip_ws(&l);
            int ok = l.p < nl && value(&l, 0);
            if (ok) {
                skip_ws(&l);
                ok = l.p == nl;
            }
            if (!ok) { /* blank or not strict JSON: the Python path decides the whole body */
                Py_DECREF(ends);
                PyBuffer_Release(&body);
                Py_RETURN_NONE;
            }
        }
        p = nl + 1;
        PyObject *e = PyLong_FromSsize_t(p - base);
        if (!e || PyList_Append(ends, e) < 0) {
            Py_XDECREF(e);
            Py_CLEAR(ends);
            break;
        }
        Py_DECREF(e);
    }
    PyBuffer_Release(&body);
    return ends;
}

static PyMethodDef methods[] = {
    {"split_lines", split_lines, METH_VARARGS,
     "split_lines(body, validate) -> ends or None\n\n"
     "The end of each line of body (which ends with a newline); with validate, None unless every line is JSON."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lines",
                                    "The http source's compiled fast path (see _lines.c).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__lines(void) { return PyModule_Create(&module); }
