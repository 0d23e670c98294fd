/* The demux processors' compiled batch paths: one pass over a batch's records writing Arrow columns.
 *
 * syslog(validity, offsets, data, offset, n, read_ms, read_offset, require_pri) and
 * access(validity, offsets, data, offset, n) read n records of an Arrow binary array (its buffers and
 * offset) and return (kind, column, ...): kind is one byte per record (0: left to the per-record path),
 * the columns Arrow buffers: (validity, values) for int64 columns, (validity, offsets, data) for string
 * ones, in the order of the processor's output schema.  read_ms holds each record's chunk read time
 * (int64 ms, for the RFC 3164 year).
 *
 * Each takes the common forms its processor's Arrow-kernel batch path takes (valid UTF-8; syslog: no
 * structured data, `Z`/`±hh:mm` times, no byte-order mark; access: no backslash, common or combined
 * format), gives them the fields the per-record path gives, and leaves every other record (kind 0,
 * all fields null) to the per-record path.  json(validity, offsets, data, offset, n) reads flat JSON
 * objects into columns it infers over the batch (see its section below).  tests/jobs/test_processors_batch.py
 * holds the three paths of each to the same output.
 *
 * Why C: the Arrow-kernel paths chain twenty to forty generic kernels, each a pass over its column
 * (13 MB per CPU second for syslog, 48 for access); one pass over the bytes does the work once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const char *const MONTHS[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const int DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

typedef const unsigned char uchar;

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
/* [ \t\n\x0b\f\r]: the NOT_SPACE class of jobs.processors.columns, negated */
static inline int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static inline int num2(uchar *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

/* Strict UTF-8 (as Python's decoder): no overlongs, no surrogates, nothing past U+10FFFF. */
static int valid_utf8(uchar *p, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) { len = 3; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) len = 3;
        else if (c == 0xED) { len = 3; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) len = 3;
        else if (c == 0xF0) { len = 4; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) { len = 4; hi = 0x8F; }
        else return 0;
        if (i + len > n) return 0;
        if (p[i + 1] < lo || p[i + 1] > hi) return 0;
        for (int k = 2; k < len; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xBF) return 0;
        i += len;
    }
    return 1;
}

/* Characters (code points) in valid UTF-8. */
static Py_ssize_t chars(uchar *p, Py_ssize_t n) {
    Py_ssize_t c = 0;
    for (Py_ssize_t i = 0; i < n; i++) c += (p[i] & 0xC0) != 0x80;
    return c;
}

static int valid_datetime(long y, int mo, int d, int hh, int mm, int ss) {
    if (y < 1 || y > 9999 || mo < 1 || mo > 12) return 0;
    int leap = (y % 4 == 0) && (y % 100 != 0 || y % 400 == 0);
    int dim = DAYS[mo - 1] + (leap && mo == 2);
    return d >= 1 && d <= dim && hh < 24 && mm < 60 && ss < 60;
}

/* UTC year and month of a time in ms since the epoch (H. Hinnant's civil_from_days). */
static void year_month(int64_t ms, long *year, int *month) {
    int64_t days = ms / 86400000;
    if (ms % 86400000 < 0) days--;
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = (long)(yoe + era * 400 + (m <= 2));
    *month = m;
}

/* An Arrow string column being built: validity bitmap, int32 offsets, data. */
typedef struct {
    uint8_t *valid;
    int32_t *offsets;
    char *data;
    Py_ssize_t len, cap;
} StrCol;

typedef struct {
    uint8_t *valid;
    int64_t *values;
} IntCol;

static int str_init(StrCol *c, Py_ssize_t n, Py_ssize_t cap) {
    c->valid = PyMem_Calloc((size_t)(n + 7) / 8 + 1, 1);
    c->offsets = PyMem_Calloc((size_t)n + 1, sizeof(int32_t));
    c->cap = cap > 64 ? cap : 64;
    c->data = PyMem_Malloc((size_t)c->cap);
    c->len = 0;
    return c->valid && c->offsets && c->data ? 0 : -1;
}

static void str_free(StrCol *c) {
    PyMem_Free(c->valid);
    PyMem_Free(c->offsets);
    PyMem_Free(c->data);
}

/* Row i's value (rows are set in order; a row not set stays null and empty). */
static int str_set(StrCol *c, Py_ssize_t i, const void *p, Py_ssize_t n) {
    if (c->len + n > c->cap) {
        Py_ssize_t cap = c->cap;
        while (cap < c->len + n) cap *= 2;
        char *data = PyMem_Realloc(c->data, (size_t)cap);
        if (data == NULL) return -1;
        c->data = data;
        c->cap = cap;
    }
    if (c->len + n > INT32_MAX) return -1;
    memcpy(c->data + c->len, p, (size_t)n);
    c->len += n;
    c->valid[i >> 3] |= (uint8_t)(1u << (i & 7));
    return 0;
}

static void str_end_row(StrCol *c, Py_ssize_t i) { c->offsets[i + 1] = (int32_t)c->len; }

static int int_init(IntCol *c, Py_ssize_t n) {
    c->valid = PyMem_Calloc((size_t)(n + 7) / 8 + 1, 1);
    c->values = PyMem_Calloc((size_t)n + 1, sizeof(int64_t));
    return c->valid && c->values ? 0 : -1;
}

static void int_free(IntCol *c) {
    PyMem_Free(c->valid);
    PyMem_Free(c->values);
}

static void int_set(IntCol *c, Py_ssize_t i, int64_t v) {
    c->values[i] = v;
    c->valid[i >> 3] |= (uint8_t)(1u << (i & 7));
}

enum { C_FORMAT, C_TIME, C_HOST, C_APP, C_PID, C_MSGID, C_MESSAGE, N_STR };

/* One record's fields, as spans into it (or built text for time). */
typedef struct {
    int kind;
    int has_pri, pri;
    uchar *p[N_STR];
    Py_ssize_t n[N_STR]; /* -1: null */
    char time[40];
} Row;

static uchar *span_end_nonspace(uchar *p, uchar *e) {
    while (p < e && !is_space(*p)) p++;
    return p;
}

static void set_span(Row *r, int col, uchar *p, Py_ssize_t n) {
    r->p[col] = p;
    r->n[col] = n;
}

static void set_nil_or_span(Row *r, int col, uchar *p, Py_ssize_t n) {
    if (n == 1 && p[0] == '-') r->n[col] = -1;
    else set_span(r, col, p, n);
}

/* RFC 5424 without structured data: 1 TIME HOST APP PID MSGID -[ MSG]; 1 when taken. */
static int rfc5424(uchar *b, uchar *e, Row *r) {
    if (e - b < 2 || b[0] != '1' || b[1] != ' ') return 0;
    uchar *f[5];
    Py_ssize_t fn[5];
    uchar *q = b + 2;
    for (int k = 0; k < 5; k++) {
        uchar *end = span_end_nonspace(q, e);
        if (end == q || end >= e || *end != ' ') return 0;
        f[k] = q;
        fn[k] = end - q;
        q = end + 1;
    }
    if (q >= e || *q != '-' || (q + 1 < e && q[1] != ' ')) return 0;
    uchar *msg = q + 1 < e ? q + 2 : e;
    if (e - msg >= 3 && msg[0] == 0xEF && msg[1] == 0xBB && msg[2] == 0xBF) return 0;
    /* TIME: - or YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]) */
    uchar *t = f[0];
    Py_ssize_t tn = fn[0];
    if (tn == 1 && t[0] == '-') {
        r->n[C_TIME] = -1;
    } else {
        if (tn < 20) return 0;
        for (int k = 0; k < 19; k++) {
            int want_sep = k == 4 || k == 7 ? '-' : k == 10 ? 'T' : k == 13 || k == 16 ? ':' : 0;
            if (want_sep ? t[k] != want_sep : !is_digit(t[k])) return 0;
        }
        long y = (t[0] - '0') * 1000 + (t[1] - '0') * 100 + num2(t + 2);
        if (!valid_datetime(y, num2(t + 5), num2(t + 8), num2(t + 11), num2(t + 14), num2(t + 17))) return 0;
        Py_ssize_t k = 19, frac = 0;
        char digits[6] = {'0', '0', '0', '0', '0', '0'};
        int nonzero = 0;
        if (k < tn && t[k] == '.') {
            k++;
            while (k < tn && is_digit(t[k]) && frac < 7) {
                if (frac < 6) digits[frac] = (char)t[k];
                nonzero |= t[k] != '0';
                frac++;
                k++;
            }
            if (frac < 1 || frac > 6) return 0;
        }
        const char *tz;
        char tzbuf[7];
        if (k + 1 == tn && t[k] == 'Z') {
            tz = "+00:00";
        } else if (k + 6 == tn && (t[k] == '+' || t[k] == '-') && is_digit(t[k + 1]) && is_digit(t[k + 2]) &&
                   t[k + 3] == ':' && t[k + 4] >= '0' && t[k + 4] <= '5' && is_digit(t[k + 5]) &&
                   num2(t + k + 1) <= 23) {
            if (t[k] == '-' && memcmp(t + k + 1, "00:00", 5) == 0) {
                tz = "+00:00";
            } else {
                memcpy(tzbuf, t + k, 6);
                tzbuf[6] = 0;
                tz = tzbuf;
            }
        } else {
            return 0;
        }
        memcpy(r->time, t, 19);
        Py_ssize_t tl = 19;
        if (nonzero) {
            r->time[tl++] = '.';
            memcpy(r->time + tl, digits, 6);
            tl += 6;
        }
        memcpy(r->time + tl, tz, 6);
        tl += 6;
        set_span(r, C_TIME, (uchar *)r->time, tl);
    }
    set_nil_or_span(r, C_HOST, f[1], fn[1]);
    set_nil_or_span(r, C_APP, f[2], fn[2]);
    set_nil_or_span(r, C_PID, f[3], fn[3]);
    set_nil_or_span(r, C_MSGID, f[4], fn[4]);
    set_span(r, C_MESSAGE, msg, e - msg);
    set_span(r, C_FORMAT, (uchar *)"rfc5424", 7);
    return 1;
}

/* RFC 3164: Mmm dd hh:mm:ss HOST[ REST], REST starting with TAG[PID]: or not; 1 when taken. */
static int rfc3164(uchar *b, uchar *e, int64_t read_ms, Row *r) {
    if (e - b < 17) return 0;
    int month = 0;
    for (int m = 0; m < 12; m++)
        if (memcmp(b, MONTHS[m], 3) == 0) month = m + 1;
    if (!month || b[3] != ' ' || !(b[4] == ' ' || is_digit(b[4])) || !is_digit(b[5]) || b[6] != ' ' ||
        !is_digit(b[7]) || !is_digit(b[8]) || b[9] != ':' || !is_digit(b[10]) || !is_digit(b[11]) ||
        b[12] != ':' || !is_digit(b[13]) || !is_digit(b[14]) || b[15] != ' ')
        return 0;
    uchar *host = b + 16;
    uchar *host_end = span_end_nonspace(host, e);
    if (host_end == host || (host_end < e && *host_end != ' ')) return 0;
    uchar *rest = host_end < e ? host_end + 1 : e;
    int day = (b[4] == ' ' ? 0 : b[4] - '0') * 10 + (b[5] - '0');
    int hh = num2(b + 7), mi = num2(b + 10), ss = num2(b + 13);
    long read_year, year;
    int read_month;
    year_month(read_ms, &read_year, &read_month);
    year = month - read_month > 6 ? read_year - 1 : read_year;
    if (!valid_datetime(read_year, month, day, hh, mi, ss) || !valid_datetime(year, month, day, hh, mi, ss)) return 0;
    /* TAG: the text before the first ':' is app[pid] (a tag), cannot be one (no tag), or is the per-record path's */
    uchar *colon = memchr(rest, ':', (size_t)(e - rest));
    r->n[C_APP] = r->n[C_PID] = -1;
    uchar *msg = rest;
    if (colon != NULL) {
        uchar *app = rest, *a = rest;
        while (a < colon && !is_space(*a) && *a != '[' && *a != ']') a++;
        Py_ssize_t app_chars = chars(app, a - app);
        int bracket = memchr(rest, '[', (size_t)(colon - rest)) != NULL;
        int tag = 0;
        uchar *pid = NULL, *p = a;
        if (app_chars >= 1 && app_chars <= 48) {
            if (a == colon) {
                tag = 1;
            } else if (*a == '[') {
                pid = p = a + 1;
                while (p < colon && !is_space(*p) && *p != ']') p++;
                Py_ssize_t pid_chars = chars(pid, p - pid);
                tag = pid_chars >= 1 && pid_chars <= 32 && p + 1 == colon && *p == ']';
            }
        }
        if (!tag && bracket) return 0;
        if (tag) {
            set_span(r, C_APP, app, a - app);
            if (pid != NULL) set_span(r, C_PID, pid, p - pid);
            msg = colon + 1;
            if (msg < e && *msg == ' ') msg++;
        }
    }
    int y4 = (int)year;
    snprintf(r->time, sizeof r->time, "%04d-%02d-%c%cT%.8s", y4, month, b[4] == ' ' ? '0' : b[4], b[5],
             (const char *)(b + 7));
    set_span(r, C_TIME, (uchar *)r->time, 19);
    set_span(r, C_HOST, host, host_end - host);
    set_span(r, C_MESSAGE, msg, e - msg);
    r->n[C_MSGID] = -1;
    set_span(r, C_FORMAT, (uchar *)"rfc3164", 7);
    return 1;
}

/* One record: its kind (0: the per-record path's) and fields. */
static void parse_record(uchar *p, Py_ssize_t n, int64_t read_ms, int require_pri, Row *r) {
    r->kind = 0;
    r->has_pri = 0;
    for (int k = 0; k < N_STR; k++) r->n[k] = -1;
    if (!valid_utf8(p, n)) return;
    if (n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) return;
    uchar *e = p + n, *body = p;
    if (n >= 3 && p[0] == '<') {
        Py_ssize_t k = 0;
        while (k < 3 && 1 + k < n && is_digit(p[1 + k])) k++;
        if (k >= 1 && 1 + k < n && p[1 + k] == '>') {
            int pri = 0;
            for (Py_ssize_t j = 0; j < k; j++) pri = pri * 10 + (p[1 + j] - '0');
            if (pri > 191) return;
            r->has_pri = 1;
            r->pri = pri;
            body = p + k + 2;
        }
    }
    if (!r->has_pri && (require_pri || (n > 0 && p[0] == '<'))) return;
    if (rfc5424(body, e, r)) r->kind = 5;
    else if (rfc3164(body, e, read_ms, r)) r->kind = 3;
    else for (int k = 0; k < N_STR; k++) r->n[k] = -1;
}

static PyObject *str_result(StrCol *c, Py_ssize_t n) {
    return Py_BuildValue("(y#y#y#)", (const char *)c->valid, (Py_ssize_t)((n + 7) / 8), (const char *)c->offsets,
                         (Py_ssize_t)((n + 1) * (Py_ssize_t)sizeof(int32_t)), c->data, c->len);
}

static PyObject *int_result(IntCol *c, Py_ssize_t n) {
    return Py_BuildValue("(y#y#)", (const char *)c->valid, (Py_ssize_t)((n + 7) / 8), (const char *)c->values,
                         (Py_ssize_t)(n * (Py_ssize_t)sizeof(int64_t)));
}

/* The records of an Arrow binary array, from its buffers. */
typedef struct {
    Py_buffer validity, offsets, data;
    int have_validity;
    const int32_t *off;
    Py_ssize_t offset, n, total;
} Records;

/* After offsets and data were taken by PyArg_ParseTuple: check the buffers describe n records. */
static int records_open(Records *r, PyObject *validity_obj) {
    r->have_validity = 0;
    if (validity_obj != Py_None) {
        if (PyObject_GetBuffer(validity_obj, &r->validity, PyBUF_SIMPLE) < 0) return -1;
        r->have_validity = 1;
    }
    if (r->offset < 0 || r->n < 0 || (r->offset + r->n + 1) * (Py_ssize_t)sizeof(int32_t) > r->offsets.len ||
        (r->have_validity && (r->offset + r->n + 7) / 8 > r->validity.len)) {
        PyErr_SetString(PyExc_ValueError, "buffers shorter than the records they describe");
        return -1;
    }
    r->off = (const int32_t *)r->offsets.buf + r->offset;
    r->total = r->n ? r->off[r->n] - r->off[0] : 0;
    if (r->n && (r->off[0] < 0 || r->off[r->n] > r->data.len || r->total < 0)) {
        PyErr_SetString(PyExc_ValueError, "offsets outside the data buffer");
        return -1;
    }
    return 0;
}

/* Record i (1), or 0 when it is null or its offsets are not sane. */
static int records_get(Records *r, Py_ssize_t i, uchar **p, Py_ssize_t *len) {
    Py_ssize_t j = r->offset + i;
    if (r->have_validity && !((((const uint8_t *)r->validity.buf)[j >> 3] >> (j & 7)) & 1)) return 0;
    int32_t a = r->off[i], b = r->off[i + 1];
    if (a < 0 || b < a || b > r->data.len) return 0;
    *p = (uchar *)r->data.buf + a;
    *len = b - a;
    return 1;
}

static void records_close(Records *r) {
    if (r->have_validity) PyBuffer_Release(&r->validity);
    PyBuffer_Release(&r->offsets);
    PyBuffer_Release(&r->data);
}

static PyObject *parse_syslog(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *validity_obj;
    Records recs;
    Py_buffer read;
    Py_ssize_t read_offset;
    int require_pri;
    if (!PyArg_ParseTuple(args, "Oy*y*nny*np", &validity_obj, &recs.offsets, &recs.data, &recs.offset, &recs.n,
                          &read, &read_offset, &require_pri))
        return NULL;
    Py_ssize_t n = recs.n;
    PyObject *result = NULL;
    char *kinds = NULL;
    StrCol s[N_STR];
    IntCol facility = {0}, severity = {0};
    memset(s, 0, sizeof s);
    if (records_open(&recs, validity_obj) < 0) goto done;
    if (read_offset < 0 || (read_offset + n) * (Py_ssize_t)sizeof(int64_t) > read.len) {
        PyErr_SetString(PyExc_ValueError, "fewer read times than records");
        goto done;
    }
    const int64_t *read_ms = (const int64_t *)read.buf + read_offset;
    kinds = PyMem_Calloc((size_t)n + 1, 1);
    if (kinds == NULL || int_init(&facility, n) < 0 || int_init(&severity, n) < 0) goto nomem;
    for (int k = 0; k < N_STR; k++)
        if (str_init(&s[k], n, k == C_MESSAGE ? recs.total : k == C_TIME || k == C_FORMAT ? n * 32 : n * 8) < 0)
            goto nomem;
    Row r;
    for (Py_ssize_t i = 0; i < n; i++) {
        uchar *p;
        Py_ssize_t len;
        if (records_get(&recs, i, &p, &len)) parse_record(p, len, read_ms[i], require_pri, &r);
        else r.kind = 0;
        kinds[i] = (char)r.kind;
        if (r.kind) {
            if (r.has_pri) {
                int_set(&facility, i, r.pri / 8);
                int_set(&severity, i, r.pri % 8);
            }
            for (int k = 0; k < N_STR; k++)
                if (r.n[k] >= 0 && str_set(&s[k], i, r.p[k], r.n[k]) < 0) goto nomem;
        }
        for (int k = 0; k < N_STR; k++) str_end_row(&s[k], i);
    }
    result = Py_BuildValue("(y#NNNNNNNNN)", kinds, n, str_result(&s[C_FORMAT], n), int_result(&facility, n),
                           int_result(&severity, n), str_result(&s[C_TIME], n), str_result(&s[C_HOST], n),
                           str_result(&s[C_APP], n), str_result(&s[C_PID], n), str_result(&s[C_MSGID], n),
                           str_result(&s[C_MESSAGE], n));
    goto done;
nomem:
    if (!PyErr_Occurred()) PyErr_NoMemory();
done:
    PyMem_Free(kinds);
    for (int k = 0; k < N_STR; k++) str_free(&s[k]);
    int_free(&facility);
    int_free(&severity);
    records_close(&recs);
    PyBuffer_Release(&read);
    return result;
}

/* ---- access: %h %l %u [%t] "%r" %>s %b ["%{Referer}i" "%{User-agent}i"][ extra] ---- */

enum { A_REMOTE, A_IDENT, A_USER, A_TIME, A_REQUEST, A_METHOD, A_PATH, A_PROTOCOL, A_REFERER, A_AGENT, A_EXTRA,
       N_ACCESS };

typedef struct {
    uchar *p[N_ACCESS];
    Py_ssize_t n[N_ACCESS]; /* -1: null */
    int64_t status, bytes;
    char time[48];
} AccessRow;

/* A field that is null when "-" or "" (the per-record path's _dash). */
static void dash(AccessRow *r, int col, uchar *p, Py_ssize_t n) {
    r->p[col] = p;
    r->n[col] = (n == 0 || (n == 1 && p[0] == '-')) ? -1 : n;
}

/* The text of a quoted field starting at *q == '"' (no backslash in the line): its end quote, or NULL. */
static uchar *quoted(uchar *q, uchar *e) {
    if (q >= e || *q != '"') return NULL;
    return memchr(q + 1, '"', (size_t)(e - q - 1));
}

/* One line; 1 when taken (valid UTF-8, no backslash, the common or combined shape, a real time). */
static int parse_access_line(uchar *p, Py_ssize_t len, AccessRow *r) {
    uchar *e = p + len;
    if (!valid_utf8(p, len) || memchr(p, '\\', (size_t)len) != NULL) return 0;
    uchar *tok[3], *q = p;
    Py_ssize_t tn[3];
    for (int k = 0; k < 3; k++) {  /* %h %l %u: three non-space runs, one space after each */
        uchar *end = span_end_nonspace(q, e);
        if (end == q || end >= e || *end != ' ') return 0;
        tok[k] = q;
        tn[k] = end - q;
        q = end + 1;
    }
    /* [dd/Mon/yyyy:HH:MM:SS +zzzz] */
    if (e - q < 29 || q[0] != '[' || q[27] != ']' || q[28] != ' ') return 0;
    uchar *t = q + 1;
    if (!is_digit(t[0]) || !is_digit(t[1]) || t[2] != '/' || t[6] != '/' || !is_digit(t[7]) || !is_digit(t[8]) ||
        !is_digit(t[9]) || !is_digit(t[10]) || t[11] != ':' || !is_digit(t[12]) || !is_digit(t[13]) ||
        t[14] != ':' || !is_digit(t[15]) || !is_digit(t[16]) || t[17] != ':' || !is_digit(t[18]) ||
        !is_digit(t[19]) || t[20] != ' ' || (t[21] != '+' && t[21] != '-') || !is_digit(t[22]) ||
        !is_digit(t[23]) || !is_digit(t[24]) || !is_digit(t[25]))
        return 0;
    int month = 0;
    for (int m = 0; m < 12; m++)
        if (memcmp(t + 3, MONTHS[m], 3) == 0) month = m + 1;
    long year = (t[7] - '0') * 1000 + (t[8] - '0') * 100 + num2(t + 9);
    if (!month || !valid_datetime(year, month, num2(t), num2(t + 12), num2(t + 15), num2(t + 18))) return 0;
    snprintf(r->time, sizeof r->time, "%.4s-%02d-%.2sT%.8s%c%.2s:%.2s", (const char *)(t + 7), month,
             (const char *)t, (const char *)(t + 12), t[21], (const char *)(t + 22), (const char *)(t + 24));
    q += 29;
    /* "%r" */
    uchar *rq_end = quoted(q, e);
    if (rq_end == NULL) return 0;
    uchar *rq = q + 1;
    Py_ssize_t rqn = rq_end - rq;
    q = rq_end + 1;
    /*  %>s %b */
    if (e - q < 6 || q[0] != ' ' || !is_digit(q[1]) || !is_digit(q[2]) || !is_digit(q[3]) || q[4] != ' ') return 0;
    r->status = (q[1] - '0') * 100 + (q[2] - '0') * 10 + (q[3] - '0');
    q += 5;
    if (*q == '-') {
        r->bytes = 0;
        q++;
    } else {
        int digits = 0;
        int64_t v = 0;
        while (q < e && is_digit(*q) && digits < 19) v = v * 10 + (*q++ - '0'), digits++;
        if (digits < 1 || digits > 18) return 0;
        r->bytes = v;
    }
    /* [ "%{Referer}i" "%{User-agent}i"][ extra], with no quote after */
    r->n[A_REFERER] = r->n[A_AGENT] = r->n[A_EXTRA] = -1;
    if (q < e && *q != ' ') return 0;
    if (e - q >= 2 && q[1] == '"') {
        uchar *ref_end = quoted(q + 1, e);
        if (ref_end == NULL || ref_end + 1 >= e || ref_end[1] != ' ') return 0;
        uchar *ag_end = quoted(ref_end + 2, e);
        if (ag_end == NULL) return 0;
        dash(r, A_REFERER, q + 2, ref_end - (q + 2));
        dash(r, A_AGENT, ref_end + 3, ag_end - (ref_end + 3));
        q = ag_end + 1;
        if (q < e && *q != ' ') return 0;
    }
    if (q < e) {  /* " extra": no quote (else the per-record path decides what it is), no newline (`.`) */
        if (memchr(q, '"', (size_t)(e - q)) != NULL || memchr(q, '\n', (size_t)(e - q)) != NULL) return 0;
        r->p[A_EXTRA] = q + 1;
        r->n[A_EXTRA] = e - q - 1 > 0 ? e - q - 1 : -1;  /* "-" is an extra like any other; "" is none */
    }
    r->p[A_REMOTE] = tok[0];
    r->n[A_REMOTE] = tn[0];
    dash(r, A_IDENT, tok[1], tn[1]);
    dash(r, A_USER, tok[2], tn[2]);
    r->p[A_TIME] = (uchar *)r->time;
    r->n[A_TIME] = 25;
    r->p[A_REQUEST] = rq;
    r->n[A_REQUEST] = rqn;
    /* %r as METHOD PATH[ PROTOCOL]: [A-Z][A-Z_-]* NS+( [A-Z]+/[0-9.]+)?, else all three null */
    r->n[A_METHOD] = r->n[A_PATH] = r->n[A_PROTOCOL] = -1;
    uchar *m = rq, *re = rq + rqn;
    if (m < re && *m >= 'A' && *m <= 'Z') {
        uchar *me = m + 1;
        while (me < re && ((*me >= 'A' && *me <= 'Z') || *me == '_' || *me == '-')) me++;
        if (me < re && *me == ' ') {
            uchar *path = me + 1, *pe = span_end_nonspace(path, re);
            int ok = pe > path;
            uchar *proto = NULL, *proto_end = NULL;
            if (ok && pe < re) {  /* " PROTOCOL" must be all that is left */
                ok = *pe == ' ';
                proto = pe + 1;
                uchar *x = proto;
                while (x < re && *x >= 'A' && *x <= 'Z') x++;
                ok = ok && x > proto && x < re && *x == '/';
                uchar *v = x + 1;
                while (ok && v < re && (is_digit(*v) || *v == '.')) v++;
                ok = ok && v > x + 1 && v == re;
                proto_end = re;
            }
            if (ok) {
                r->p[A_METHOD] = m;
                r->n[A_METHOD] = me - m;
                r->p[A_PATH] = path;
                r->n[A_PATH] = pe - path;
                if (proto != NULL) {
                    r->p[A_PROTOCOL] = proto;
                    r->n[A_PROTOCOL] = proto_end - proto;
                }
            }
        }
    }
    return 1;
}

static PyObject *parse_access(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *validity_obj;
    Records recs;
    if (!PyArg_ParseTuple(args, "Oy*y*nn", &validity_obj, &recs.offsets, &recs.data, &recs.offset, &recs.n))
        return NULL;
    Py_ssize_t n = recs.n;
    PyObject *result = NULL;
    char *kinds = NULL;
    StrCol s[N_ACCESS];
    IntCol status = {0}, bytes = {0};
    memset(s, 0, sizeof s);
    if (records_open(&recs, validity_obj) < 0) goto done;
    kinds = PyMem_Calloc((size_t)n + 1, 1);
    if (kinds == NULL || int_init(&status, n) < 0 || int_init(&bytes, n) < 0) goto nomem;
    for (int k = 0; k < N_ACCESS; k++)
        if (str_init(&s[k], n, k == A_AGENT || k == A_REQUEST ? recs.total / 3 : n * 16) < 0) goto nomem;
    AccessRow r;
    for (Py_ssize_t i = 0; i < n; i++) {
        uchar *p;
        Py_ssize_t len;
        int kind = records_get(&recs, i, &p, &len) && parse_access_line(p, len, &r);
        kinds[i] = (char)kind;
        if (kind) {
            int_set(&status, i, r.status);
            int_set(&bytes, i, r.bytes);
            for (int k = 0; k < N_ACCESS; k++)
                if (r.n[k] >= 0 && str_set(&s[k], i, r.p[k], r.n[k]) < 0) goto nomem;
        }
        for (int k = 0; k < N_ACCESS; k++) str_end_row(&s[k], i);
    }
    result = Py_BuildValue("(y#NNNNNNNNNNNNN)", kinds, n, str_result(&s[A_REMOTE], n), str_result(&s[A_IDENT], n),
                           str_result(&s[A_USER], n), str_result(&s[A_TIME], n), str_result(&s[A_REQUEST], n),
                           str_result(&s[A_METHOD], n), str_result(&s[A_PATH], n), str_result(&s[A_PROTOCOL], n),
                           int_result(&status, n), int_result(&bytes, n), str_result(&s[A_REFERER], n),
                           str_result(&s[A_AGENT], n), str_result(&s[A_EXTRA], n));
    goto done;
nomem:
    if (!PyErr_Occurred()) PyErr_NoMemory();
done:
    PyMem_Free(kinds);
    for (int k = 0; k < N_ACCESS; k++) str_free(&s[k]);
    int_free(&status);
    int_free(&bytes);
    records_close(&recs);
    return result;
}

/* ---- json: one flat JSON object per record -> columns inferred over the batch ----
 *
 * Takes a record when json.loads gives a dict of scalars for it and this pass can give the same values:
 * JSON whitespace around one object; members whose values are strings, int64 integers, floats (parsed
 * by Python's own PyOS_string_to_double), true, false or null; strict UTF-8, no control character in a
 * string, no lone surrogate, no duplicate key.  Anything else (nested values, big integers, NaN and
 * Infinity, bad JSON) is left to the per-record path.  A column's type is inferred as rows_to_batch
 * infers it: int64, float64 (ints and floats), bool, string, null; a column whose values disagree
 * holds JSON text (strings as they are; numbers and booleans as json.dumps writes them).
 */

#define J_MAX_MEMBERS 256 /* members of one record taken */
#define J_MAX_COLUMNS 256 /* columns of one batch */
#define J_SLOTS 512       /* hash slots of the column table (twice the columns) */

enum { JK_NULL = 1, JK_BOOL = 2, JK_INT = 4, JK_FLOAT = 8, JK_STR = 16 };

typedef struct {
    char *name;
    Py_ssize_t name_len;
    uint8_t *kind;   /* per row: 0 absent, else one JK_ */
    int64_t *value;  /* per row: int, bool, double bits, or a string's length */
    char *data;      /* strings in row order */
    Py_ssize_t len, cap;
    Py_ssize_t last_row; /* the last row with this key: a second one in that row is a duplicate */
    int kinds;
} JCol;

typedef struct {
    Py_ssize_t n;
    JCol cols[J_MAX_COLUMNS];
    int ncols;
    int slots[J_SLOTS]; /* column index + 1, 0 empty */
} JTable;

/* One member of the record being read, before it is committed. */
typedef struct {
    const char *key;
    Py_ssize_t key_len;
    int col;   /* -1 until looked up */
    int kind;
    int64_t value;
    const char *str; /* JK_STR: the unescaped text */
} JMember;

typedef struct {
    uchar *p, *e;
    char *scratch; /* unescaped strings of the record: never longer than the record */
    Py_ssize_t used;
} JReader;

static inline void j_ws(JReader *r) {
    while (r->p < r->e && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int hex4(uchar *p, unsigned *v) {
    unsigned x = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        x <<= 4;
        if (c >= '0' && c <= '9') x |= c - '0';
        else if (c >= 'a' && c <= 'f') x |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') x |= c - 'A' + 10;
        else return 0;
    }
    *v = x;
    return 1;
}

/* A string at r->p == '"': its text (into scratch when it has escapes, else a span of the record). */
static int j_string(JReader *r, const char **out, Py_ssize_t *out_len) {
    uchar *start = ++r->p, *q = start;
    while (q < r->e && *q != '"' && *q != '\\' && *q >= 0x20) q++;
    if (q >= r->e || *q < 0x20) return 0;
    if (*q == '"') {
        if (!valid_utf8(start, q - start)) return 0;
        *out = (const char *)start;
        *out_len = q - start;
        r->p = q + 1;
        return 1;
    }
    char *o = r->scratch + r->used, *o0 = o;
    memcpy(o, start, (size_t)(q - start));
    o += q - start;
    while (q < r->e && *q != '"') {
        unsigned char c = *q;
        if (c < 0x20) return 0;
        if (c != '\\') {
            *o++ = (char)c;
            q++;
            continue;
        }
        if (q + 1 >= r->e) return 0;
        c = q[1];
        q += 2;
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned u, lo;
            if (r->e - q < 4 || !hex4(q, &u)) return 0;
            q += 4;
            if (u >= 0xDC00 && u <= 0xDFFF) return 0; /* a lone low surrogate */
            if (u >= 0xD800 && u <= 0xDBFF) {
                if (r->e - q < 6 || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return 0; /* a lone high surrogate */
                q += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (u < 0x80) *o++ = (char)u;
            else if (u < 0x800) {
                *o++ = (char)(0xC0 | (u >> 6));
                *o++ = (char)(0x80 | (u & 0x3F));
            } else if (u < 0x10000) {
                *o++ = (char)(0xE0 | (u >> 12));
                *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
                *o++ = (char)(0x80 | (u & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (u >> 18));
                *o++ = (char)(0x80 | ((u >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
                *o++ = (char)(0x80 | (u & 0x3F));
            }
            break;
        }
        default: return 0;
        }
    }
    if (q >= r->e || !valid_utf8((uchar *)o0, o - o0)) return 0;
    *out = o0;
    *out_len = o - o0;
    r->used += o - o0;
    r->p = q + 1;
    return 1;
}

/* A number at r->p: int64 (JK_INT) or double (JK_FLOAT), by the grammar json.loads reads. */
static int j_number(JReader *r, JMember *m) {
    uchar *s = r->p, *q = s;
    int neg = 0;
    if (q < r->e && *q == '-') {
        neg = 1;
        q++;
    }
    if (q >= r->e || !is_digit(*q)) return 0;
    uchar *digits = q;
    if (*q == '0') q++;
    else while (q < r->e && is_digit(*q)) q++;
    uchar *int_end = q;
    int is_float = 0;
    if (q < r->e && *q == '.') {
        q++;
        if (q >= r->e || !is_digit(*q)) return 0;
        while (q < r->e && is_digit(*q)) q++;
        is_float = 1;
    }
    if (q < r->e && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < r->e && (*q == '+' || *q == '-')) q++;
        if (q >= r->e || !is_digit(*q)) return 0;
        while (q < r->e && is_digit(*q)) q++;
        is_float = 1;
    }
    if (q >= r->e) return 0; /* an object's number is followed by at least its closing brace */
    if (!is_float) {
        if (int_end - digits > 18) return 0; /* may not fit int64: the per-record path decides */
        int64_t v = 0;
        for (uchar *d = digits; d < int_end; d++) v = v * 10 + (*d - '0');
        m->kind = JK_INT;
        m->value = neg ? -v : v;
    } else {
        char buf[64];
        if (q - s >= (Py_ssize_t)sizeof buf) return 0;
        memcpy(buf, s, (size_t)(q - s));
        buf[q - s] = 0;
        char *end;
        double d = PyOS_string_to_double(buf, &end, NULL);
        if (end != buf + (q - s)) {
            PyErr_Clear();
            return 0;
        }
        m->kind = JK_FLOAT;
        memcpy(&m->value, &d, sizeof d);
    }
    r->p = q;
    return 1;
}

static int j_literal(JReader *r, const char *word, Py_ssize_t n) {
    if (r->e - r->p < n || memcmp(r->p, word, (size_t)n) != 0) return 0;
    r->p += n;
    return 1;
}

/* One record: members into m (count into *count); 1 when it is one flat object this pass takes. */
static int j_object(JReader *r, JMember *m, int *count) {
    int k = 0;
    j_ws(r);
    if (r->p >= r->e || *r->p != '{') return 0;
    r->p++;
    j_ws(r);
    if (r->p < r->e && *r->p == '}') {
        r->p++;
    } else {
        for (;;) {
            if (k == J_MAX_MEMBERS || r->p >= r->e || *r->p != '"') return 0;
            JMember *x = &m[k++];
            if (!j_string(r, &x->key, &x->key_len)) return 0;
            x->col = -1;
            j_ws(r);
            if (r->p >= r->e || *r->p != ':') return 0;
            r->p++;
            j_ws(r);
            if (r->p >= r->e) return 0;
            switch (*r->p) {
            case '"':
                x->kind = JK_STR;
                if (!j_string(r, &x->str, &x->value)) return 0;
                break;
            case 't': x->kind = JK_BOOL; x->value = 1; if (!j_literal(r, "true", 4)) return 0; break;
            case 'f': x->kind = JK_BOOL; x->value = 0; if (!j_literal(r, "false", 5)) return 0; break;
            case 'n': x->kind = JK_NULL; x->value = 0; if (!j_literal(r, "null", 4)) return 0; break;
            default:
                if (!j_number(r, x)) return 0;
            }
            j_ws(r);
            if (r->p < r->e && *r->p == ',') {
                r->p++;
                j_ws(r);
                continue;
            }
            if (r->p < r->e && *r->p == '}') {
                r->p++;
                break;
            }
            return 0;
        }
    }
    j_ws(r);
    *count = k;
    return r->p == r->e;
}

static uint32_t j_hash(const char *p, Py_ssize_t n) {
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* The slot holding key, or the empty slot where it would go. */
static int j_slot(JTable *t, const char *key, Py_ssize_t n) {
    uint32_t i = j_hash(key, n) & (J_SLOTS - 1);
    for (;;) {
        int c = t->slots[i];
        if (c == 0) return (int)i;
        JCol *col = &t->cols[c - 1];
        if (col->name_len == n && memcmp(col->name, key, (size_t)n) == 0) return (int)i;
        i = (i + 1) & (J_SLOTS - 1);
    }
}

static int j_new_column(JTable *t, int slot, const char *key, Py_ssize_t n) {
    JCol *c = &t->cols[t->ncols];
    memset(c, 0, sizeof *c);
    c->name = PyMem_Malloc((size_t)n + 1);
    c->kind = PyMem_Calloc((size_t)t->n + 1, 1);
    c->value = PyMem_Malloc(((size_t)t->n + 1) * sizeof(int64_t));
    c->cap = 256;
    c->data = PyMem_Malloc((size_t)c->cap);
    if (!c->name || !c->kind || !c->value || !c->data) {
        PyMem_Free(c->name);
        PyMem_Free(c->kind);
        PyMem_Free(c->value);
        PyMem_Free(c->data);
        return -1;
    }
    memcpy(c->name, key, (size_t)n);
    c->name_len = n;
    c->last_row = -1;
    t->slots[slot] = ++t->ncols;
    return t->ncols - 1;
}

/* Commit record i's members; 0 (nothing written) on a duplicate key or past J_MAX_COLUMNS, -1 on no memory.
 * A declined record may leave last_row == i on some columns: harmless, rows come in order. */
static int j_commit(JTable *t, Py_ssize_t i, JMember *m, int count) {
    int fresh = 0;
    for (int k = 0; k < count; k++) {
        int c = t->slots[j_slot(t, m[k].key, m[k].key_len)];
        if (c) {
            if (t->cols[c - 1].last_row == i) return 0;
            t->cols[c - 1].last_row = i;
            m[k].col = c - 1;
            continue;
        }
        for (int j = 0; j < k; j++)
            if (m[j].col < 0 && m[j].key_len == m[k].key_len && memcmp(m[j].key, m[k].key, (size_t)m[k].key_len) == 0)
                return 0;
        fresh++;
    }
    if (t->ncols + fresh > J_MAX_COLUMNS) return 0;
    for (int k = 0; k < count; k++) {
        if (m[k].col < 0) {
            m[k].col = j_new_column(t, j_slot(t, m[k].key, m[k].key_len), m[k].key, m[k].key_len);
            if (m[k].col < 0) return -1;
        }
        JCol *c = &t->cols[m[k].col];
        c->kind[i] = (uint8_t)m[k].kind;
        c->kinds |= m[k].kind;
        c->value[i] = m[k].value;
        if (m[k].kind == JK_STR) {
            if (c->len + m[k].value > c->cap) {
                Py_ssize_t cap = c->cap;
                while (cap < c->len + m[k].value) cap *= 2;
                char *data = PyMem_Realloc(c->data, (size_t)cap);
                if (data == NULL) return -1;
                c->data = data;
                c->cap = cap;
            }
            memcpy(c->data + c->len, m[k].str, (size_t)m[k].value);
            c->len += m[k].value;
        }
    }
    return 1;
}

/* A bytes object of n bytes to be filled (NULL with an exception set). */
static PyObject *j_bytes(Py_ssize_t n, char **p) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (b) *p = PyBytes_AS_STRING(b);
    return b;
}

/* Column c as (name, type, buffers): type "null", "int64", "double", "bool" or "string". */
static PyObject *j_column(JCol *c, Py_ssize_t n) {
    int kinds = c->kinds & ~JK_NULL;
    Py_ssize_t vbytes = (n + 7) / 8;
    char *valid, *values, *offs;
    PyObject *v = NULL, *x = NULL, *o = NULL, *d = NULL, *out = NULL;
    if (kinds == 0) return Py_BuildValue("(y#s())", c->name, c->name_len, "null");
    if ((v = j_bytes(vbytes, &valid)) == NULL) return NULL;
    memset(valid, 0, (size_t)vbytes);
    for (Py_ssize_t i = 0; i < n; i++)
        if (c->kind[i] > JK_NULL) valid[i >> 3] |= (char)(1u << (i & 7));
    if (kinds == JK_INT || kinds == JK_FLOAT || kinds == (JK_INT | JK_FLOAT)) {
        if ((x = j_bytes(n * 8, &values)) == NULL) goto done;
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t bits = c->kind[i] > JK_NULL ? c->value[i] : 0;
            if (kinds != JK_INT && c->kind[i] == JK_INT) {
                double dv = (double)c->value[i];
                memcpy(&bits, &dv, sizeof bits);
            }
            memcpy(values + i * 8, &bits, 8);
        }
        out = Py_BuildValue("(y#s(NN))", c->name, c->name_len, kinds == JK_INT ? "int64" : "double", v, x);
        v = x = NULL;
    } else if (kinds == JK_BOOL) {
        if ((x = j_bytes(vbytes, &values)) == NULL) goto done;
        memset(values, 0, (size_t)vbytes);
        for (Py_ssize_t i = 0; i < n; i++)
            if (c->kind[i] == JK_BOOL && c->value[i]) values[i >> 3] |= (char)(1u << (i & 7));
        out = Py_BuildValue("(y#s(NN))", c->name, c->name_len, "bool", v, x);
        v = x = NULL;
    } else {
        /* strings, or JSON text of a mixed column: first the size, then the text */
        Py_ssize_t total = 0, at = 0;
        char num[32];
        for (Py_ssize_t i = 0; i < n; i++) {
            switch (c->kind[i]) {
            case JK_STR: total += c->value[i]; break;
            case JK_BOOL: total += c->value[i] ? 4 : 5; break;
            case JK_INT: total += snprintf(num, sizeof num, "%lld", (long long)c->value[i]); break;
            case JK_FLOAT: total += 32; break; /* repr of a double: at most 24 characters */
            }
        }
        if (total > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "a JSON column of more than 2 GiB");
            goto done;
        }
        if ((o = j_bytes((n + 1) * 4, &offs)) == NULL) goto done;
        char *buf = PyMem_Malloc((size_t)total + 1);
        if (buf == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        const char *src = c->data;
        int32_t off = 0;
        memcpy(offs, &off, 4);
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t val = c->value[i];
            switch (c->kind[i]) {
            case JK_STR:
                memcpy(buf + at, src, (size_t)val);
                src += val;
                at += val;
                break;
            case JK_BOOL:
                memcpy(buf + at, val ? "true" : "false", val ? 4 : 5);
                at += val ? 4 : 5;
                break;
            case JK_INT: at += snprintf(buf + at, 32, "%lld", (long long)val); break;
            case JK_FLOAT: {
                double dv;
                memcpy(&dv, &val, sizeof dv);
                const char *special = dv != dv ? "NaN" : dv > 1.7976931348623157e308 ? "Infinity"
                                    : dv < -1.7976931348623157e308 ? "-Infinity" : NULL;
                if (special) {
                    memcpy(buf + at, special, strlen(special));
                    at += (Py_ssize_t)strlen(special);
                } else {
                    char *r = PyOS_double_to_string(dv, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
                    if (r == NULL) {
                        PyMem_Free(buf);
                        goto done;
                    }
                    size_t rn = strlen(r);
                    memcpy(buf + at, r, rn);
                    at += (Py_ssize_t)rn;
                    PyMem_Free(r);
                }
                break;
            }
            }
            off = (int32_t)at;
            memcpy(offs + (i + 1) * 4, &off, 4);
        }
        d = PyBytes_FromStringAndSize(buf, at);
        PyMem_Free(buf);
        if (d == NULL) goto done;
        out = Py_BuildValue("(y#s(NNN))", c->name, c->name_len, "string", v, o, d);
        v = o = d = NULL;
    }
done:
    Py_XDECREF(v);
    Py_XDECREF(x);
    Py_XDECREF(o);
    Py_XDECREF(d);
    return out;
}

static PyObject *parse_json(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *validity_obj;
    Records recs;
    if (!PyArg_ParseTuple(args, "Oy*y*nn", &validity_obj, &recs.offsets, &recs.data, &recs.offset, &recs.n))
        return NULL;
    Py_ssize_t n = recs.n;
    PyObject *result = NULL, *taken = NULL, *columns = NULL;
    JTable *t = NULL;
    JMember *members = NULL;
    char *scratch = NULL, *kinds;
    if (records_open(&recs, validity_obj) < 0) goto done;
    t = PyMem_Calloc(1, sizeof *t);
    members = PyMem_Malloc(J_MAX_MEMBERS * sizeof *members);
    Py_ssize_t longest = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uchar *p;
        Py_ssize_t len;
        if (records_get(&recs, i, &p, &len) && len > longest) longest = len;
    }
    scratch = PyMem_Malloc((size_t)longest + 1);
    if (t == NULL || members == NULL || scratch == NULL || (taken = j_bytes(n, &kinds)) == NULL) goto nomem;
    t->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        uchar *p;
        Py_ssize_t len;
        int count = 0, ok = 0;
        if (records_get(&recs, i, &p, &len)) {
            JReader r = {p, p + len, scratch, 0};
            if (j_object(&r, members, &count)) {
                ok = j_commit(t, i, members, count);
                if (ok < 0) goto nomem;
            }
        }
        kinds[i] = (char)ok;
    }
    if ((columns = PyList_New(t->ncols)) == NULL) goto done;
    for (int c = 0; c < t->ncols; c++) {
        PyObject *col = j_column(&t->cols[c], n);
        if (col == NULL) goto done;
        PyList_SET_ITEM(columns, c, col);
    }
    result = Py_BuildValue("(OO)", taken, columns);
    goto done;
nomem:
    if (!PyErr_Occurred()) PyErr_NoMemory();
done:
    Py_XDECREF(taken);
    Py_XDECREF(columns);
    if (t)
        for (int c = 0; c < t->ncols; c++) {
            PyMem_Free(t->cols[c].name);
            PyMem_Free(t->cols[c].kind);
            PyMem_Free(t->cols[c].value);
            PyMem_Free(t->cols[c].data);
        }
    PyMem_Free(t);
    PyMem_Free(members);
    PyMem_Free(scratch);
    records_close(&recs);
    return result;
}

static PyMethodDef methods[] = {
    {"access", parse_access, METH_VARARGS,
     "access(validity, offsets, data, offset, n) -> (kind, remote_addr, ident, user, time, request, method, path, "
     "protocol, status, bytes, referer, user_agent, extra)"},
    {"json", parse_json, METH_VARARGS,
     "json(validity, offsets, data, offset, n) -> (taken, [(name, type, buffers), ...])"},
    {"syslog", parse_syslog, METH_VARARGS,
     "syslog(validity, offsets, data, offset, n, read_ms, read_offset, require_pri) -> (kind, format, facility, "
     "severity, time, host, app, pid, msgid, message)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_columns",
                                    "The demux processors' compiled batch paths (see _columns.c).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__columns(void) { return PyModule_Create(&module); }
