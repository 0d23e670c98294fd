/* The syslog source's compiled fast path: the messages of a whole receive buffer at once.
 *
 * scan_tcp(data, start, end, max_message_size, fields) reads the complete frames of data[start:end]
 * (RFC 6587: octet counting, LEN SP MSG, and newline framing, MSG LF, chosen per frame) and groups
 * their messages by the header fields the stream template uses.  It mirrors FrameDecoder
 * (framing.py) and parse_header exactly, byte for byte; tests/sources/test_syslog_scan.py holds it
 * to them.  It stops, leaving the rest to FrameDecoder, at the first frame it does not take: one not
 * all in this read, one longer than max_message_size (cut and flagged), or digits that are no length.
 *
 * scan_datagrams(datagrams, start, max_message_size, fields) does the same for a list of UDP
 * datagrams (one message each, trailing line ends stripped, empty ones skipped), stopping at one
 * longer than max_message_size (cut and flagged by the Python path).
 *
 * Both return (stop, groups, messages, nbytes): groups is a list of (values, records, ends) in order
 * of first appearance, values the tuple of field strings (in the order of `fields`), records the
 * messages each followed by b"\n", ends the record ends within records.
 *
 * recv_datagrams(fd, scratch, slot, timeout_ms) takes up to len(scratch) // slot (at most 64) waiting
 * datagrams off a UDP socket in one recvmmsg(2), the GIL released while it waits (poll, up to
 * timeout_ms) and reads, and returns them as runs of one sender: [(peer, [datagram, ...]), ...]
 * ([] when none came).  peer is the address as socket.recvfrom gives it.  In Python a datagram costs
 * a recvfrom_into call, a copy and a tuple under the GIL, which the deliver thread needs too.
 *
 * Why C: in Python, framing, header parsing and stream picking cost ~4 us a message (250k/s), and
 * rsyslog handles ~500-700k/s here.  Here a message costs a memchr, a header walk and a memcpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#define HEAD_MAX 512   /* parse_header looks at msg[:512] */
#define FIELD_MAX 64   /* _field keeps raw[:64] */
#define MAX_FIELDS 7
#define MAX_LENGTH_DIGITS 10 /* FrameDecoder's: more digits are text, not a length */

enum { F_APP, F_HOST, F_FACILITY, F_SEVERITY, F_PROCID, F_MSGID, F_FORMAT };
static const char *const FIELD_NAMES[MAX_FIELDS] = {"app", "host", "facility", "severity", "procid", "msgid",
                                                    "format"};

static const char *const FACILITIES[24] = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4", "local5",
    "local6", "local7"};
static const char *const SEVERITIES[8] = {"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"};

/* A header field: raw bytes to make safe (_field), or a constant. */
typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    int raw;
} Field;

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
/* \s of a bytes pattern: [ \t\n\r\f\v] */
static inline int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static inline int is_safe(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || c == '@';
}

static inline void set_const(Field *f, const char *s) {
    f->p = (const unsigned char *)s;
    f->n = (Py_ssize_t)strlen(s);
    f->raw = 0;
}
static inline void set_raw(Field *f, const unsigned char *p, Py_ssize_t n) {
    f->p = p;
    f->n = n;
    f->raw = 1;
}

/* Length of the run of non-space bytes at p (up to e). */
static inline Py_ssize_t nonspace_run(const unsigned char *p, const unsigned char *e) {
    const unsigned char *q = p;
    while (q < e && !is_space(*q)) q++;
    return q - p;
}

/* rest.startswith an RFC 3164 timestamp and a space (_RFC3164_TS); returns its length or 0. */
static Py_ssize_t rfc3164_ts(const unsigned char *r, const unsigned char *e) {
    Py_ssize_t n = e - r;
    if (n >= 16 && r[0] >= 'A' && r[0] <= 'Z' && r[1] >= 'a' && r[1] <= 'z' && r[2] >= 'a' && r[2] <= 'z' &&
        r[3] == ' ' && (r[4] == ' ' || is_digit(r[4])) && is_digit(r[5]) && r[6] == ' ' && is_digit(r[7]) &&
        is_digit(r[8]) && r[9] == ':' && is_digit(r[10]) && is_digit(r[11]) && r[12] == ':' && is_digit(r[13]) &&
        is_digit(r[14]) && r[15] == ' ')
        return 16;
    if (n >= 12 && is_digit(r[0]) && is_digit(r[1]) && is_digit(r[2]) && is_digit(r[3]) && r[4] == '-' &&
        is_digit(r[5]) && is_digit(r[6]) && r[7] == '-' && is_digit(r[8]) && is_digit(r[9]) && r[10] == 'T') {
        Py_ssize_t run = nonspace_run(r + 11, e);
        if (run >= 1 && r + 11 + run < e && r[11 + run] == ' ') return 11 + run + 1;
    }
    return 0;
}

/* parse_header(msg) for the fields of a message (msg excludes its newline and a trailing CR/NUL). */
static void parse_header(const unsigned char *msg, Py_ssize_t len, Field f[MAX_FIELDS]) {
    for (int k = 0; k < MAX_FIELDS; k++) set_const(&f[k], "-");
    set_const(&f[F_FORMAT], "unknown");
    const unsigned char *e = msg + (len < HEAD_MAX ? len : HEAD_MAX);
    /* <PRI>: 1-3 digits */
    if (e - msg < 3 || msg[0] != '<') return;
    Py_ssize_t k = 0;
    while (k < 3 && msg + 1 + k < e && is_digit(msg[1 + k])) k++;
    if (k == 0 || msg + 1 + k >= e || msg[1 + k] != '>') return;
    int pri = 0;
    for (Py_ssize_t j = 0; j < k; j++) pri = pri * 10 + (msg[1 + j] - '0');
    if (pri <= 191) {
        set_const(&f[F_FACILITY], FACILITIES[pri >> 3]);
        set_const(&f[F_SEVERITY], SEVERITIES[pri & 7]);
    }
    const unsigned char *rest = msg + 1 + k + 1;

    /* RFC 5424: VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID */
    {
        const unsigned char *p = rest;
        Py_ssize_t d = 0;
        while (p + d < e && is_digit(p[d]) && d < 3) d++;
        if ((d == 1 || d == 2) && p + d < e && p[d] == ' ') {
            const unsigned char *g[5];
            Py_ssize_t gn[5];
            const unsigned char *q = p + d + 1;
            int ok = 1;
            for (int j = 0; j < 5; j++) {
                Py_ssize_t run = nonspace_run(q, e);
                if (run == 0) { ok = 0; break; }
                g[j] = q;
                gn[j] = run;
                q += run;
                if (j < 4) {
                    if (q >= e || *q != ' ') { ok = 0; break; }
                    q++;
                }
            }
            if (ok && !(d == 1 && p[0] == '0')) {
                set_const(&f[F_FORMAT], "rfc5424");
                set_raw(&f[F_HOST], g[1], gn[1]);
                set_raw(&f[F_APP], g[2], gn[2]);
                set_raw(&f[F_PROCID], g[3], gn[3]);
                set_raw(&f[F_MSGID], g[4], gn[4]);
                return;
            }
        }
    }

    /* RFC 3164: [TIMESTAMP SP] [HOST SP] TAG[PID]: */
    set_const(&f[F_FORMAT], "rfc3164");
    rest += rfc3164_ts(rest, e);
    const unsigned char *sp1 = memchr(rest, ' ', e - rest);
    const unsigned char *first_end = sp1 ? sp1 : e;
    Py_ssize_t first_n = first_end - rest;
    const unsigned char *tag;
    Py_ssize_t tag_n;
    int first_is_tag = first_n > 0 && (rest[first_n - 1] == ':' || memchr(rest, '[', first_n) != NULL);
    if (first_is_tag) {
        tag = rest;
        tag_n = first_n;
    } else {
        if (first_n > 0) set_raw(&f[F_HOST], rest, first_n);
        if (sp1) {
            tag = sp1 + 1;
            const unsigned char *sp2 = memchr(tag, ' ', e - tag);
            tag_n = (sp2 ? sp2 : e) - tag;
        } else {
            tag = e;
            tag_n = 0;
        }
        if (!(tag_n > 0 && (tag[tag_n - 1] == ':' || memchr(tag, '[', tag_n) != NULL))) return;
    }
    while (tag_n > 0 && tag[tag_n - 1] == ':') tag_n--;
    const unsigned char *br = memchr(tag, '[', tag_n);
    if (br == NULL) {
        set_raw(&f[F_APP], tag, tag_n);
        return;
    }
    set_raw(&f[F_APP], tag, br - tag);
    const unsigned char *pid = br + 1;
    Py_ssize_t pid_n = tag + tag_n - pid;
    if (pid_n > 0) {
        while (pid_n > 0 && pid[pid_n - 1] == ']') pid_n--;
        set_raw(&f[F_PROCID], pid, pid_n);
    }
}

/* _field(raw): the first 64 bytes with every byte outside [A-Za-z0-9._-@] made '_'; empty: "-". */
static Py_ssize_t render(const Field *f, char *out) {
    if (!f->raw) {
        memcpy(out, f->p, (size_t)f->n);
        return f->n;
    }
    Py_ssize_t n = f->n < FIELD_MAX ? f->n : FIELD_MAX;
    if (n == 0) {
        out[0] = '-';
        return 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) out[i] = is_safe(f->p[i]) ? (char)f->p[i] : '_';
    return n;
}

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    PyObject *ends;   /* list of int */
    PyObject *values; /* tuple of str */
} Group;

static int group_append(Group *g, const unsigned char *msg, Py_ssize_t n) {
    if (g->len + n + 1 > g->cap) {
        Py_ssize_t cap = g->cap ? g->cap : 4096;
        while (cap < g->len + n + 1) cap *= 2;
        char *data = PyMem_Realloc(g->data, (size_t)cap);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        g->data = data;
        g->cap = cap;
    }
    memcpy(g->data + g->len, msg, (size_t)n);
    g->data[g->len + n] = '\n';
    g->len += n + 1;
    PyObject *end = PyLong_FromSsize_t(g->len);
    if (end == NULL) return -1;
    int rc = PyList_Append(g->ends, end);
    Py_DECREF(end);
    return rc;
}

static PyObject *values_of(const char *key, Py_ssize_t key_n, int nfields) {
    PyObject *t = PyTuple_New(nfields);
    if (t == NULL) return NULL;
    const char *p = key;
    for (int j = 0; j < nfields; j++) {
        const char *z = memchr(p, '\0', (size_t)(key + key_n - p));
        PyObject *s = PyUnicode_DecodeASCII(p, z - p, "strict");
        if (s == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, j, s);
        p = z + 1;
    }
    return t;
}

/* Messages grouped by the rendered values of the wanted fields, in order of first appearance. */
typedef struct {
    int want[MAX_FIELDS], nfields;
    PyObject *index; /* key bytes -> group number */
    Group *groups;
    Py_ssize_t ngroups, cap;
    char key[MAX_FIELDS * (FIELD_MAX + 1) + 16], last_key[MAX_FIELDS * (FIELD_MAX + 1) + 16];
    Py_ssize_t last_n, last_group, messages, nbytes;
} Grouper;

static int grouper_init(Grouper *gr, PyObject *fields_obj) {
    memset(gr, 0, sizeof *gr);
    gr->last_n = -1;
    PyObject *fields = PySequence_Fast(fields_obj, "fields must be a sequence of field names");
    if (fields == NULL) return -1;
    int rc = -1;
    if (PySequence_Fast_GET_SIZE(fields) > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "too many fields");
        goto out;
    }
    for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(fields); j++) {
        const char *name = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(fields, j));
        if (name == NULL) goto out;
        int found = -1;
        for (int k = 0; k < MAX_FIELDS; k++)
            if (strcmp(name, FIELD_NAMES[k]) == 0) found = k;
        if (found < 0) {
            PyErr_Format(PyExc_ValueError, "unknown field %s", name);
            goto out;
        }
        gr->want[gr->nfields++] = found;
    }
    gr->index = PyDict_New();
    rc = gr->index ? 0 : -1;
out:
    Py_DECREF(fields);
    return rc;
}

static void grouper_free(Grouper *gr) {
    for (Py_ssize_t g = 0; g < gr->ngroups; g++) {
        PyMem_Free(gr->groups[g].data);
        Py_XDECREF(gr->groups[g].ends);
        Py_XDECREF(gr->groups[g].values);
    }
    PyMem_Free(gr->groups);
    Py_XDECREF(gr->index);
}

/* The group of a key not seen last: found in the index, or new. */
static Py_ssize_t grouper_find(Grouper *gr, Py_ssize_t key_n) {
    PyObject *k = PyBytes_FromStringAndSize(gr->key, key_n);
    if (k == NULL) return -1;
    Py_ssize_t gi = -1;
    PyObject *found = PyDict_GetItemWithError(gr->index, k);
    if (found != NULL) {
        gi = PyLong_AsSsize_t(found);
    } else if (!PyErr_Occurred()) {
        if (gr->ngroups == gr->cap) {
            Py_ssize_t cap = gr->cap ? gr->cap * 2 : 8;
            Group *groups = PyMem_Realloc(gr->groups, (size_t)cap * sizeof(Group));
            if (groups == NULL) {
                PyErr_NoMemory();
                goto out;
            }
            gr->groups = groups;
            gr->cap = cap;
        }
        Group *g = &gr->groups[gr->ngroups];
        memset(g, 0, sizeof *g);
        gr->ngroups++;
        g->ends = PyList_New(0);
        g->values = g->ends ? values_of(gr->key, key_n, gr->nfields) : NULL;
        PyObject *pos = g->values ? PyLong_FromSsize_t(gr->ngroups - 1) : NULL;
        if (pos != NULL && PyDict_SetItem(gr->index, k, pos) == 0) gi = gr->ngroups - 1;
        Py_XDECREF(pos);
    }
out:
    Py_DECREF(k);
    return gi;
}

/* One message (without its framing) into the group of its stream fields. */
static int grouper_add(Grouper *gr, const unsigned char *msg, Py_ssize_t n) {
    Py_ssize_t key_n = 0;
    if (gr->nfields) {
        Field f[MAX_FIELDS];
        parse_header(msg, n, f);
        for (int j = 0; j < gr->nfields; j++) {
            key_n += render(&f[gr->want[j]], gr->key + key_n);
            gr->key[key_n++] = '\0';
        }
    }
    Py_ssize_t gi = gr->last_group;
    if (key_n != gr->last_n || memcmp(gr->key, gr->last_key, (size_t)key_n) != 0) {
        gi = grouper_find(gr, key_n);
        if (gi < 0) return -1;
        memcpy(gr->last_key, gr->key, (size_t)key_n);
        gr->last_n = key_n;
        gr->last_group = gi;
    }
    if (group_append(&gr->groups[gi], msg, n) < 0) return -1;
    gr->messages++;
    gr->nbytes += n + 1;
    return 0;
}

/* (stop, [(values, records, ends)], messages, nbytes) */
static PyObject *grouper_result(Grouper *gr, Py_ssize_t stop) {
    PyObject *groups = PyList_New(gr->ngroups);
    if (groups == NULL) return NULL;
    for (Py_ssize_t g = 0; g < gr->ngroups; g++) {
        PyObject *records = PyBytes_FromStringAndSize(gr->groups[g].data, gr->groups[g].len);
        PyObject *item = records ? PyTuple_Pack(3, gr->groups[g].values, records, gr->groups[g].ends) : NULL;
        Py_XDECREF(records);
        if (item == NULL) {
            Py_DECREF(groups);
            return NULL;
        }
        PyList_SET_ITEM(groups, g, item);
    }
    PyObject *result = Py_BuildValue("(nOnn)", stop, groups, gr->messages, gr->nbytes);
    Py_DECREF(groups);
    return result;
}

static PyObject *scan_tcp(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, end, max_message_size;
    PyObject *fields, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*nnnO", &view, &start, &end, &max_message_size, &fields)) return NULL;
    Grouper gr;
    if (grouper_init(&gr, fields) < 0) goto done;
    if (start < 0 || end > view.len || start > end || max_message_size < 0) {
        PyErr_SetString(PyExc_ValueError, "bad range");
        goto done;
    }
    const unsigned char *d = view.buf;
    Py_ssize_t i = start;
    while (i < end) {
        unsigned char c = d[i];
        if (c == '\n' || c == '\r' || c == 0 || c == ' ') { /* empty frames, stray separators */
            i++;
            continue;
        }
        if (c >= '1' && c <= '9') { /* octet counting: LEN SP MSG */
            Py_ssize_t k = 0;
            long long len = 0;
            while (k < MAX_LENGTH_DIGITS && i + k < end && is_digit(d[i + k])) len = len * 10 + (d[i + k++] - '0');
            if (i + k >= end || d[i + k] != ' ') break;  /* more digits to come, or no length: FrameDecoder's */
            if (len > max_message_size || len > end - (i + k + 1)) break;  /* cut, or not all here yet */
            if (grouper_add(&gr, d + i + k + 1, (Py_ssize_t)len) < 0) goto done;
            i += k + 1 + (Py_ssize_t)len;
            continue;
        }
        const unsigned char *nl = memchr(d + i, '\n', (size_t)(end - i));
        if (nl == NULL || nl - (d + i) > max_message_size) break; /* incomplete, or cut: FrameDecoder's */
        Py_ssize_t n = nl - (d + i);
        if (n > 0 && (d[i + n - 1] == '\r' || d[i + n - 1] == 0)) n--;
        if (grouper_add(&gr, d + i, n) < 0) goto done;
        i = nl - d + 1;
    }
    result = grouper_result(&gr, i);
done:
    grouper_free(&gr);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *scan_datagrams(PyObject *self, PyObject *args) {
    PyObject *datagrams, *fields, *result = NULL;
    Py_ssize_t start, max_message_size;
    if (!PyArg_ParseTuple(args, "O!nnO", &PyList_Type, &datagrams, &start, &max_message_size, &fields)) return NULL;
    Grouper gr;
    if (grouper_init(&gr, fields) < 0) goto done;
    Py_ssize_t i = start < 0 ? 0 : start;
    for (; i < PyList_GET_SIZE(datagrams); i++) {
        PyObject *item = PyList_GET_ITEM(datagrams, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "datagrams must be bytes");
            goto done;
        }
        const unsigned char *msg = (const unsigned char *)PyBytes_AS_STRING(item);
        Py_ssize_t n = PyBytes_GET_SIZE(item);
        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r' || msg[n - 1] == 0)) n--;
        if (n == 0) continue;                  /* nothing but line ends: no message */
        if (n > max_message_size) break;       /* cut and flagged: the Python path's */
        if (grouper_add(&gr, msg, n) < 0) goto done;
    }
    result = grouper_result(&gr, i);
done:
    grouper_free(&gr);
    return result;
}

#define RECV_SLOTS 64

/* The address of a datagram's sender as socket.recvfrom gives it (host part). */
static PyObject *peer_name(const struct sockaddr_storage *a) {
    char text[INET6_ADDRSTRLEN];
    const void *host = a->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)a)->sin6_addr
                                                : (const void *)&((const struct sockaddr_in *)a)->sin_addr;
    if (inet_ntop(a->ss_family, host, text, sizeof text) == NULL) return PyUnicode_FromString("");
    return PyUnicode_FromString(text);
}

static PyObject *recv_datagrams(PyObject *self, PyObject *args) {
    (void)self;
    int fd, timeout_ms;
    Py_buffer scratch;
    Py_ssize_t slot;
    if (!PyArg_ParseTuple(args, "iw*ni", &fd, &scratch, &slot, &timeout_ms)) return NULL;
    PyObject *runs = NULL, *run = NULL, *datagrams = NULL;
    Py_ssize_t count = slot > 0 ? scratch.len / slot : 0;
    if (count > RECV_SLOTS) count = RECV_SLOTS;
    if (count < 1 || slot > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "scratch must hold at least one slot");
        goto done;
    }
    struct mmsghdr msgs[RECV_SLOTS];
    struct iovec iov[RECV_SLOTS];
    struct sockaddr_storage addrs[RECV_SLOTS];
    memset(msgs, 0, sizeof msgs);
    for (Py_ssize_t i = 0; i < count; i++) {
        iov[i].iov_base = (char *)scratch.buf + i * slot;
        iov[i].iov_len = (size_t)slot;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
    }
    int n = 0, err = 0;
    Py_BEGIN_ALLOW_THREADS
    struct pollfd p = {fd, POLLIN, 0};
    int ready = poll(&p, 1, timeout_ms);
    if (ready > 0) {
        n = recvmmsg(fd, msgs, (unsigned)count, MSG_DONTWAIT, NULL);
        if (n < 0) err = errno;
    } else if (ready < 0) {
        n = -1;
        err = errno;
    }
    Py_END_ALLOW_THREADS
    if (n < 0) {
        if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        n = 0;
    }
    if ((runs = PyList_New(0)) == NULL) goto done;
    for (int i = 0; i < n; i++) {
        const struct sockaddr_storage *a = &addrs[i];
        socklen_t alen = msgs[i].msg_hdr.msg_namelen;
        if (i == 0 || alen != msgs[i - 1].msg_hdr.msg_namelen || memcmp(a, &addrs[i - 1], alen) != 0) {
            PyObject *peer = peer_name(a);
            datagrams = PyList_New(0);
            run = peer && datagrams ? PyTuple_Pack(2, peer, datagrams) : NULL;
            Py_XDECREF(peer);
            Py_XDECREF(datagrams);
            if (run == NULL || PyList_Append(runs, run) < 0) goto fail;
            Py_DECREF(run);
            run = NULL;
        }
        PyObject *d = PyBytes_FromStringAndSize(iov[i].iov_base, (Py_ssize_t)msgs[i].msg_len);
        if (d == NULL || PyList_Append(datagrams, d) < 0) {
            Py_XDECREF(d);
            goto fail;
        }
        Py_DECREF(d);
    }
    goto done;
fail:
    Py_XDECREF(run);
    Py_CLEAR(runs);
done:
    PyBuffer_Release(&scratch);
    return runs;
}

static PyMethodDef methods[] = {
    {"scan_tcp", scan_tcp, METH_VARARGS,
     "scan_tcp(data, start, end, max_message_size, fields) -> (stop, groups, messages, nbytes)\n\n"
     "The complete syslog frames (RFC 6587) of data[start:end], grouped by the header fields named."},
    {"scan_datagrams", scan_datagrams, METH_VARARGS,
     "scan_datagrams(datagrams, start, max_message_size, fields) -> (stop, groups, messages, nbytes)\n\n"
     "UDP datagrams (bytes, one message each) from start on, grouped; stops at one longer than max_message_size."},
    {"recv_datagrams", recv_datagrams, METH_VARARGS,
     "recv_datagrams(fd, scratch, slot, timeout_ms) -> [(peer, [datagram, ...]), ...]\n\n"
     "Waiting UDP datagrams (up to len(scratch) // slot, at most 64) in one recvmmsg, the GIL released."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan",
                                    "The syslog source's compiled fast path (see _scan.c).", -1, methods};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
