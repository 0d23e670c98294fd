/* The forward source's compiled fast path: a PackedForward message's entries straight to JSON lines.
 *
 * transcode(entries, time_key, budget) reads the concatenated msgpack [time, record] entries of a
 * (Compressed)PackedForward message and returns (records, ends): each event as the JSON object line
 * event_json (protocol.py) makes of it, followed by b"\n", all in one bytes object, and the end of
 * each line within it.  It returns None for anything it does not take, and the Python path (which
 * decodes with msgpack and encodes with orjson or json) then does the whole message, raising the
 * ProtocolError a malformed message deserves:
 *   - malformed or truncated msgpack, an entry that is not [time, record, ...], a time that is not
 *     an integer, a float, an EventTime or [time, ...];
 *   - bin values, ext values other than EventTime, map keys that are not strings, duplicate keys
 *     (a dict keeps the last value), maps of more than MAX_KEYS keys, NaN and infinities, nesting
 *     deeper than MAX_DEPTH;
 *   - more than `budget` arrays and maps (the Python path's container budget refuses the message).
 * Strings keep their bytes as received (the Python path decodes with surrogateescape and encodes the
 * same way back), escaped as json.dumps(ensure_ascii=False) escapes; floats are written as Python's
 * repr writes them.  tests/sources/test_forward_packed.py holds it to the Python path.
 *
 * Why C: in Python each event costs a msgpack object, two hook calls, an EventTime conversion, an
 * orjson call and a list append (~4 us: 240k events/s here); rsyslog handles ~500k messages/s.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_KEYS 64

typedef struct {
    const unsigned char *p, *end;
    Py_ssize_t budget; /* arrays and maps still allowed */
} In;

/* Output written straight into a bytes object (resized as it grows, cut to length at the end), so that
 * the records are not copied once more into the bytes Python gets. */
typedef struct {
    PyObject *obj;
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int out_grow(Out *o, Py_ssize_t need) {
    if (o->len + need <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + need)
        cap *= 2;
    if (o->obj == NULL)
        o->obj = PyBytes_FromStringAndSize(NULL, cap);
    else if (_PyBytes_Resize(&o->obj, cap) < 0)
        o->obj = NULL; /* _PyBytes_Resize freed it */
    if (o->obj == NULL)
        return -1;
    o->buf = PyBytes_AS_STRING(o->obj);
    o->cap = cap;
    return 0;
}

static inline int out_put(Out *o, const void *s, Py_ssize_t n) {
    if (out_grow(o, n) < 0)
        return -1;
    memcpy(o->buf + o->len, s, (size_t)n);
    o->len += n;
    return 0;
}

static inline int out_ch(Out *o, char c) { return out_put(o, &c, 1); }

/* Result of a parse step: 0 ok, 1 not taken (fall back to Python), -1 Python error set (memory). */
enum { OK = 0, FALLBACK = 1, ERR = -1 };

static inline int need(In *in, Py_ssize_t n) { return in->end - in->p >= n ? OK : FALLBACK; }

static inline uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* A string's bytes as a JSON string, escaped as json.dumps(ensure_ascii=False) does. */
static int put_json_string(Out *o, const unsigned char *s, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    if (out_grow(o, n + 2) < 0)
        return ERR;
    o->buf[o->len++] = '"';
    Py_ssize_t run = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (out_put(o, s + run, i - run) < 0)
            return ERR;
        run = i + 1;
        char esc[6];
        int k;
        switch (c) {
        case '"': esc[0] = '\\'; esc[1] = '"'; k = 2; break;
        case '\\': esc[0] = '\\'; esc[1] = '\\'; k = 2; break;
        case '\n': esc[0] = '\\'; esc[1] = 'n'; k = 2; break;
        case '\r': esc[0] = '\\'; esc[1] = 'r'; k = 2; break;
        case '\t': esc[0] = '\\'; esc[1] = 't'; k = 2; break;
        case '\b': esc[0] = '\\'; esc[1] = 'b'; k = 2; break;
        case '\f': esc[0] = '\\'; esc[1] = 'f'; k = 2; break;
        default:
            esc[0] = '\\'; esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15]; k = 6;
        }
        if (out_put(o, esc, k) < 0)
            return ERR;
    }
    if (out_put(o, s + run, n - run) < 0 || out_ch(o, '"') < 0)
        return ERR;
    return OK;
}

static int put_double(Out *o, double d) {
    if (!isfinite(d))
        return FALLBACK; /* the Python path decides what NaN and infinities become */
    char *s = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s)
        return ERR;
    int r = out_put(o, s, (Py_ssize_t)strlen(s));
    PyMem_Free(s);
    return r < 0 ? ERR : OK;
}

static int put_int(Out *o, int64_t v) {
    char s[24];
    int n = snprintf(s, sizeof s, "%lld", (long long)v);
    return out_put(o, s, n) < 0 ? ERR : OK;
}

static int put_uint(Out *o, uint64_t v) {
    char s[24];
    int n = snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    return out_put(o, s, n) < 0 ? ERR : OK;
}

/* The header of a str at in->p: its bytes (or FALLBACK if the next value is not a str). */
static int read_str(In *in, const unsigned char **s, Py_ssize_t *n) {
    if (need(in, 1))
        return FALLBACK;
    unsigned char t = *in->p;
    Py_ssize_t len, head;
    if (t >= 0xa0 && t <= 0xbf) { len = t & 0x1f; head = 1; }
    else if (t == 0xd9) { if (need(in, 2)) return FALLBACK; len = in->p[1]; head = 2; }
    else if (t == 0xda) { if (need(in, 3)) return FALLBACK; len = (Py_ssize_t)be(in->p + 1, 2); head = 3; }
    else if (t == 0xdb) { if (need(in, 5)) return FALLBACK; len = (Py_ssize_t)be(in->p + 1, 4); head = 5; }
    else return FALLBACK;
    if (need(in, head + len))
        return FALLBACK;
    *s = in->p + head;
    *n = len;
    in->p += head + len;
    return OK;
}

/* A container's header: kind 'a' or 'm' and its length, charged to the budget; FALLBACK if it is not one. */
static int read_container(In *in, char *kind, uint32_t *len) {
    if (need(in, 1))
        return FALLBACK;
    unsigned char t = *in->p;
    int head;
    if (t >= 0x90 && t <= 0x9f) { *kind = 'a'; *len = t & 0x0f; head = 1; }
    else if (t >= 0x80 && t <= 0x8f) { *kind = 'm'; *len = t & 0x0f; head = 1; }
    else if (t == 0xdc || t == 0xde) { if (need(in, 3)) return FALLBACK; *kind = t == 0xdc ? 'a' : 'm'; *len = (uint32_t)be(in->p + 1, 2); head = 3; }
    else if (t == 0xdd || t == 0xdf) { if (need(in, 5)) return FALLBACK; *kind = t == 0xdd ? 'a' : 'm'; *len = (uint32_t)be(in->p + 1, 4); head = 5; }
    else return FALLBACK;
    if (--in->budget < 0)
        return FALLBACK;
    /* Each element takes at least one byte (two for a map entry): a length past the input is a lie. */
    if ((uint64_t)*len * (*kind == 'm' ? 2 : 1) > (uint64_t)(in->end - in->p - head))
        return FALLBACK;
    in->p += head;
    return OK;
}

/* An EventTime ext (code 0, 8 bytes) at in->p as seconds; FALLBACK if the next value is not one. */
static int read_event_time(In *in, double *t) {
    const unsigned char *p = in->p;
    Py_ssize_t head;
    if (need(in, 1))
        return FALLBACK;
    if (p[0] == 0xd7) head = 1;                                     /* fixext 8 */
    else if (p[0] == 0xc7 && need(in, 2) == OK && p[1] == 8) head = 2; /* ext 8, length 8 */
    else if (p[0] == 0xc8 && need(in, 3) == OK && be(p + 1, 2) == 8) head = 3;
    else if (p[0] == 0xc9 && need(in, 5) == OK && be(p + 1, 4) == 8) head = 5;
    else return FALLBACK;
    if (need(in, head + 1 + 8) || p[head] != 0)
        return FALLBACK;
    uint32_t sec = (uint32_t)be(p + head + 1, 4), nsec = (uint32_t)be(p + head + 5, 4);
    *t = (double)sec + (double)nsec / 1e9; /* sec + nsec / 1e9, as _ext_hook computes it */
    in->p += head + 1 + 8;
    return OK;
}

static int put_value(In *in, Out *o, int depth);

/* Past the next value without writing it (an entry's time metadata and elements past [time, record],
 * which the Python path decodes and drops; a record's values while looking for time_key).  Arrays and
 * maps are charged to the budget as the Python path's hooks charge them; a map key that is an array or
 * a map (unhashable: the Python path fails) is not taken. */
static int skip_value(In *in, int depth) {
    if (depth > MAX_DEPTH || need(in, 1))
        return FALLBACK;
    const unsigned char *p = in->p;
    unsigned char t = p[0];
    if ((t >= 0x80 && t <= 0x9f) || (t >= 0xdc && t <= 0xdf)) {
        char kind;
        uint32_t n;
        int r = read_container(in, &kind, &n);
        for (uint32_t i = 0; r == OK && i < n; i++) {
            if (kind == 'm') {
                unsigned char k = need(in, 1) == OK ? *in->p : 0x90;
                if ((k >= 0x80 && k <= 0x9f) || (k >= 0xdc && k <= 0xdf))
                    return FALLBACK;
                r = skip_value(in, depth + 1);
            }
            if (r == OK)
                r = skip_value(in, depth + 1);
        }
        return r;
    }
    Py_ssize_t size; /* bytes of the whole value */
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) size = 1;
    else if (t >= 0xa0 && t <= 0xbf) size = 1 + (t & 0x1f);
    else if (t == 0xcc || t == 0xd0) size = 2;
    else if (t == 0xcd || t == 0xd1) size = 3;
    else if (t == 0xce || t == 0xd2 || t == 0xca) size = 5;
    else if (t == 0xcf || t == 0xd3 || t == 0xcb) size = 9;
    else if (t >= 0xd4 && t <= 0xd8) size = 2 + (1 << (t - 0xd4)); /* fixext: type byte and 1-16 bytes */
    else if (t == 0xd9 || t == 0xc4) { if (need(in, 2)) return FALLBACK; size = 2 + (Py_ssize_t)p[1]; }
    else if (t == 0xda || t == 0xc5) { if (need(in, 3)) return FALLBACK; size = 3 + (Py_ssize_t)be(p + 1, 2); }
    else if (t == 0xdb || t == 0xc6) { if (need(in, 5)) return FALLBACK; size = 5 + (Py_ssize_t)be(p + 1, 4); }
    else if (t == 0xc7) { if (need(in, 2)) return FALLBACK; size = 3 + (Py_ssize_t)p[1]; }
    else if (t == 0xc8) { if (need(in, 3)) return FALLBACK; size = 4 + (Py_ssize_t)be(p + 1, 2); }
    else if (t == 0xc9) { if (need(in, 5)) return FALLBACK; size = 6 + (Py_ssize_t)be(p + 1, 4); }
    else return FALLBACK; /* 0xc1: never used */
    if (need(in, size))
        return FALLBACK;
    in->p += size;
    return OK;
}

/* A map's entries as a JSON object's members (after its header): keys must be distinct strings.
 * first: no member was written before them (else each is preceded by a comma). */
static int put_members(In *in, Out *o, uint32_t n, int depth, int first) {
    const unsigned char *keys[MAX_KEYS];
    Py_ssize_t lens[MAX_KEYS];
    if (n > MAX_KEYS)
        return FALLBACK;
    for (uint32_t i = 0; i < n; i++) {
        int r = read_str(in, &keys[i], &lens[i]);
        if (r != OK)
            return r;
        for (uint32_t j = 0; j < i; j++)
            if (lens[j] == lens[i] && memcmp(keys[j], keys[i], (size_t)lens[i]) == 0)
                return FALLBACK;
        if ((!first || i) && out_ch(o, ',') < 0)
            return ERR;
        if (put_json_string(o, keys[i], lens[i]) < 0 || out_ch(o, ':') < 0)
            return ERR;
        r = put_value(in, o, depth + 1);
        if (r != OK)
            return r;
    }
    return OK;
}

static int put_value(In *in, Out *o, int depth) {
    if (depth > MAX_DEPTH || need(in, 1))
        return FALLBACK;
    const unsigned char *p = in->p;
    unsigned char t = p[0];
    if (t <= 0x7f) { in->p++; return put_int(o, t); }
    if (t >= 0xe0) { in->p++; return put_int(o, (int8_t)t); }
    if ((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb)) {
        const unsigned char *s;
        Py_ssize_t n;
        int r = read_str(in, &s, &n);
        return r != OK ? r : put_json_string(o, s, n);
    }
    if ((t >= 0x80 && t <= 0x9f) || (t >= 0xdc && t <= 0xdf)) {
        char kind;
        uint32_t n;
        int r = read_container(in, &kind, &n);
        if (r != OK)
            return r;
        if (kind == 'm') {
            if (out_ch(o, '{') < 0)
                return ERR;
            r = put_members(in, o, n, depth, 1);
            return r != OK ? r : (out_ch(o, '}') < 0 ? ERR : OK);
        }
        if (out_ch(o, '[') < 0)
            return ERR;
        for (uint32_t i = 0; i < n; i++) {
            if (i && out_ch(o, ',') < 0)
                return ERR;
            r = put_value(in, o, depth + 1);
            if (r != OK)
                return r;
        }
        return out_ch(o, ']') < 0 ? ERR : OK;
    }
    switch (t) {
    case 0xc0: in->p++; return out_put(o, "null", 4) < 0 ? ERR : OK;
    case 0xc2: in->p++; return out_put(o, "false", 5) < 0 ? ERR : OK;
    case 0xc3: in->p++; return out_put(o, "true", 4) < 0 ? ERR : OK;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        int n = 1 << (t - 0xcc);
        if (need(in, 1 + n)) return FALLBACK;
        uint64_t v = be(p + 1, n);
        in->p += 1 + n;
        return put_uint(o, v);
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int n = 1 << (t - 0xd0);
        if (need(in, 1 + n)) return FALLBACK;
        uint64_t v = be(p + 1, n);
        int64_t s = n == 8 ? (int64_t)v : (int64_t)(v ^ (1ULL << (8 * n - 1))) - (int64_t)(1ULL << (8 * n - 1));
        in->p += 1 + n;
        return put_int(o, s);
    }
    case 0xca: {
        if (need(in, 5)) return FALLBACK;
        uint32_t bits = (uint32_t)be(p + 1, 4);
        float f;
        memcpy(&f, &bits, 4);
        in->p += 5;
        return put_double(o, (double)f);
    }
    case 0xcb: {
        if (need(in, 9)) return FALLBACK;
        uint64_t bits = be(p + 1, 8);
        double d;
        memcpy(&d, &bits, 8);
        in->p += 9;
        return put_double(o, d);
    }
    default: {
        double et;
        if (read_event_time(in, &et) == OK) /* an EventTime inside a record: a float, as _ext_hook makes it */
            return put_double(o, et);
        return FALLBACK; /* bin, other ext, 0xc1 */
    }
    }
}

/* An entry's time: integer, float or EventTime, or [time, metadata...] whose first element is one. */
static int put_time(In *in, Out *o, int depth) {
    if (need(in, 1))
        return FALLBACK;
    unsigned char t = *in->p;
    if (t == 0xc2 || t == 0xc3)
        return FALLBACK; /* a bool is not a time */
    if ((t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd) {
        if (depth)
            return FALLBACK;
        char kind;
        uint32_t n;
        int r = read_container(in, &kind, &n);
        if (r != OK)
            return r;
        if (n == 0)
            return FALLBACK;
        r = put_time(in, o, depth + 1);
        for (uint32_t i = 1; i < n && r == OK; i++)
            r = skip_value(in, 1); /* the metadata: decoded and dropped by the Python path */
        return r;
    }
    double et;
    if (read_event_time(in, &et) == OK)
        return put_double(o, et);
    if (t <= 0x7f || t >= 0xe0 || (t >= 0xca && t <= 0xd3))
        return put_value(in, o, MAX_DEPTH);
    return FALLBACK;
}

static PyObject *transcode(PyObject *self, PyObject *args) {
    Py_buffer data;
    PyObject *time_key_obj;
    Py_ssize_t budget;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*On", &data, &time_key_obj, &budget))
        return NULL;
    const char *time_key = NULL;
    Py_ssize_t time_key_len = 0;
    if (time_key_obj != Py_None) {
        time_key = PyUnicode_AsUTF8AndSize(time_key_obj, &time_key_len);
        if (!time_key) {
            PyBuffer_Release(&data);
            return NULL;
        }
    }
    In in = {(const unsigned char *)data.buf, (const unsigned char *)data.buf + data.len, budget};
    Out o = {NULL, NULL, 0, 0};
    PyObject *ends = PyList_New(0);
    int r = ends ? OK : ERR;
    Out tbuf = {NULL, NULL, 0, 0};
    while (r == OK && in.p < in.end) {
        char kind;
        uint32_t n;
        r = read_container(&in, &kind, &n);
        if (r != OK)
            break;
        if (kind != 'a' || n < 2) {
            r = FALLBACK;
            break;
        }
        tbuf.len = 0;
        r = put_time(&in, &tbuf, 0);
        if (r != OK)
            break;
        /* The record: a map keeps its keys (the time first unless it has time_key), anything else is
         * {"message": value}. */
        if (out_ch(&o, '{') < 0) { r = ERR; break; }
        uint32_t nkeys = 0;
        int is_map = 0;
        if (need(&in, 1) == OK && ((*in.p >= 0x80 && *in.p <= 0x8f) || *in.p == 0xde || *in.p == 0xdf)) {
            r = read_container(&in, &kind, &nkeys);
            if (r != OK)
                break;
            is_map = 1;
        }
        int has_time_key = 0;
        if (time_key) {
            if (is_map) {
                In scan = in; /* look for time_key among the top-level keys, skipping their values */
                scan.budget = PY_SSIZE_T_MAX;
                for (uint32_t i = 0; i < nkeys && r == OK && !has_time_key; i++) {
                    const unsigned char *k;
                    Py_ssize_t kl;
                    r = read_str(&scan, &k, &kl);
                    if (r == OK && kl == time_key_len && memcmp(k, time_key, (size_t)kl) == 0)
                        has_time_key = 1;
                    else if (r == OK)
                        r = skip_value(&scan, 1);
                }
                if (r != OK)
                    break;
            } else
                has_time_key = time_key_len == 7 && memcmp(time_key, "message", 7) == 0;
            if (!has_time_key) {
                if (put_json_string(&o, (const unsigned char *)time_key, time_key_len) < 0 || out_ch(&o, ':') < 0 ||
                    out_put(&o, tbuf.buf, tbuf.len) < 0) {
                    r = ERR;
                    break;
                }
            }
        }
        int first = !(time_key && !has_time_key);
        if (is_map)
            r = put_members(&in, &o, nkeys, 1, first);
        else {
            if ((!first && out_ch(&o, ',') < 0) || out_put(&o, "\"message\":", 10) < 0) { r = ERR; break; }
            r = put_value(&in, &o, 1);
        }
        if (r != OK)
            break;
        /* Elements past [time, record] are decoded (and charged) by the Python path, then ignored. */
        for (uint32_t i = 2; i < n && r == OK; i++)
            r = skip_value(&in, 1);
        if (r != OK)
            break;
        if (out_put(&o, "}\n", 2) < 0) { r = ERR; break; }
        PyObject *end = PyLong_FromSsize_t(o.len);
        if (!end || PyList_Append(ends, end) < 0) {
            Py_XDECREF(end);
            r = ERR;
            break;
        }
        Py_DECREF(end);
    }
    Py_XDECREF(tbuf.obj);
    PyBuffer_Release(&data);
    if (r != OK) {
        Py_XDECREF(o.obj);
        Py_XDECREF(ends);
        if (r == ERR) {
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *records = o.obj;
    if (records == NULL)
        records = PyBytes_FromStringAndSize("", 0);
    else if (_PyBytes_Resize(&records, o.len) < 0)
        records = NULL;
    if (!records) {
        Py_DECREF(ends);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, records, ends);
    Py_DECREF(records);
    Py_DECREF(ends);
    return result;
}

static PyMethodDef methods[] = {
    {"transcode", transcode, METH_VARARGS,
     "transcode(entries, time_key, budget) -> (records, ends) or None\n\n"
     "PackedForward entries as JSON object lines, as event_json makes them; None where the Python path must decide."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_packed",
                                    "The forward source's compiled fast path (see _packed.c).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__packed(void) { return PyModule_Create(&module); }
