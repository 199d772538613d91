/*
 * A simulated NVML: a shared library exporting the NVML entry points labnode's GPU
 * collector calls, answering from a JSON device profile instead of a GPU. Loaded by
 * path (labnode's `collectors.gpu.library`); the profile is the file named by
 * LABNODE_FAKE_NVML_PROFILE, read at every nvmlInit so a test can change it between
 * re-initialisations. Only the GPU is simulated: everything above this C boundary is
 * the real collector and the real nvml-wrapper.
 *
 * Profile keys (per GPU; a missing or null field is NOT_SUPPORTED, as on a real GPU
 * that lacks it): see tests/fake-nvml/profiles/tesla-p4.json. Faults: `lost_after_s`
 * (seconds after init), `lost_at_unix` (a wall-clock time) or `lost_if_exists` (a file a
 * test creates) make every call on that GPU return GPU_IS_LOST; `hang` names a call that
 * never returns. LABNODE_FAKE_NVML_INIT_LOG, when set, names a file that gets one line per
 * successful nvmlInit, so a test can count re-initialisations.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum {
  OK = 0, UNINITIALIZED = 1, INVALID_ARGUMENT = 2, NOT_SUPPORTED = 3, NOT_FOUND = 6,
  INSUFFICIENT_SIZE = 7, DRIVER_NOT_LOADED = 9, GPU_IS_LOST = 15, UNKNOWN = 999
};

/* ---- a small JSON reader ------------------------------------------------------- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct jval {
  enum jtype t;
  double num;
  char *str;
  int n;              /* children */
  char **keys;        /* objects only */
  struct jval **items;
} jval;

typedef struct { const char *p; const char *err; } jparser;

static void jskip(jparser *s) { while (isspace((unsigned char)*s->p)) s->p++; }

static jval *jnew(enum jtype t) {
  jval *v = calloc(1, sizeof *v);
  v->t = t;
  return v;
}

static void jfree(jval *v) {
  if (!v) return;
  for (int i = 0; i < v->n; i++) {
    if (v->keys) free(v->keys[i]);
    jfree(v->items[i]);
  }
  free(v->keys);
  free(v->items);
  free(v->str);
  free(v);
}

static jval *jparse(jparser *s);

static char *jstring(jparser *s) {
  if (*s->p != '"') { s->err = "expected a string"; return NULL; }
  s->p++;
  size_t cap = 16, len = 0;
  char *out = malloc(cap);
  while (*s->p && *s->p != '"') {
    char c = *s->p++;
    if (c == '\\') {
      c = *s->p++;
      if (c == 'n') c = '\n'; else if (c == 't') c = '\t';
      else if (c != '"' && c != '\\' && c != '/') { s->err = "unsupported escape"; free(out); return NULL; }
    }
    if (len + 2 > cap) out = realloc(out, cap *= 2);
    out[len++] = c;
  }
  if (*s->p != '"') { s->err = "unterminated string"; free(out); return NULL; }
  s->p++;
  out[len] = 0;
  return out;
}

static void jpush(jval *v, char *key, jval *item) {
  v->items = realloc(v->items, sizeof *v->items * (v->n + 1));
  if (v->t == J_OBJ) v->keys = realloc(v->keys, sizeof *v->keys * (v->n + 1)), v->keys[v->n] = key;
  v->items[v->n++] = item;
}

static jval *jparse(jparser *s) {
  jskip(s);
  char c = *s->p;
  if (c == '{' || c == '[') {
    jval *v = jnew(c == '{' ? J_OBJ : J_ARR);
    char close = c == '{' ? '}' : ']';
    s->p++;
    jskip(s);
    if (*s->p == close) { s->p++; return v; }
    for (;;) {
      char *key = NULL;
      jskip(s);
      if (v->t == J_OBJ) {
        if (!(key = jstring(s))) { jfree(v); return NULL; }
        jskip(s);
        if (*s->p != ':') { s->err = "expected ':'"; free(key); jfree(v); return NULL; }
        s->p++;
      }
      jval *item = jparse(s);
      if (!item) { free(key); jfree(v); return NULL; }
      jpush(v, key, item);
      jskip(s);
      if (*s->p == ',') { s->p++; continue; }
      if (*s->p == close) { s->p++; return v; }
      s->err = "expected ',' or a closing bracket";
      jfree(v);
      return NULL;
    }
  }
  if (c == '"') {
    jval *v = jnew(J_STR);
    if (!(v->str = jstring(s))) { jfree(v); return NULL; }
    return v;
  }
  if (!strncmp(s->p, "null", 4)) { s->p += 4; return jnew(J_NULL); }
  if (!strncmp(s->p, "true", 4)) { s->p += 4; jval *v = jnew(J_BOOL); v->num = 1; return v; }
  if (!strncmp(s->p, "false", 5)) { s->p += 5; return jnew(J_BOOL); }
  char *end;
  double d = strtod(s->p, &end);
  if (end == s->p) { s->err = "unexpected character"; return NULL; }
  s->p = end;
  jval *v = jnew(J_NUM);
  v->num = d;
  return v;
}

static jval *jget(const jval *o, const char *key) {
  if (!o || o->t != J_OBJ) return NULL;
  for (int i = 0; i < o->n; i++)
    if (!strcmp(o->keys[i], key)) return o->items[i];
  return NULL;
}

/* A number field: 1 and the value, or 0 when absent or null (NOT_SUPPORTED). */
static int jnum(const jval *o, const char *key, double *out) {
  const jval *v = jget(o, key);
  if (!v || (v->t != J_NUM && v->t != J_BOOL)) return 0;
  *out = v->num;
  return 1;
}

static const char *jstr(const jval *o, const char *key, const char *dflt) {
  const jval *v = jget(o, key);
  return v && v->t == J_STR ? v->str : dflt;
}

/* ---- the simulated devices ----------------------------------------------------- */

typedef struct gpu { int index; const jval *p; } gpu;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static jval *profile;
static gpu gpus[16];
static int gpu_count;
static int initialised;
static double init_time;
static double init_unix;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wall-clock seconds: profiles that must survive a re-initialisation (which may unload
 * this library) give absolute times, and tests can compute the power curve exactly. */
static double unix_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}


nvmlReturn_t nvmlInit_v2(void) {
  pthread_mutex_lock(&lock);
  const char *path = getenv("LABNODE_FAKE_NVML_PROFILE");
  nvmlReturn_t rc = OK;
  FILE *f = path ? fopen(path, "rb") : NULL;
  if (!f) {
    fprintf(stderr, "fake-nvml: cannot open LABNODE_FAKE_NVML_PROFILE=%s\n", path ? path : "(unset)");
    rc = DRIVER_NOT_LOADED;
    goto out;
  }
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&text, &len);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, mem);
  fclose(f);
  fclose(mem);
  jparser s = {text, NULL};
  jval *p = jparse(&s);
  if (!p || p->t != J_OBJ) {
    fprintf(stderr, "fake-nvml: %s: %s at byte %ld\n", path, s.err ? s.err : "not an object",
            (long)(s.p - text));
    free(text);
    jfree(p);
    rc = UNKNOWN;
    goto out;
  }
  free(text);
  const char *init = jstr(p, "init", "ok");
  if (!strcmp(init, "driver_not_loaded")) {
    jfree(p);
    rc = DRIVER_NOT_LOADED;
    goto out;
  }
  jfree(profile);
  profile = p;
  const jval *list = jget(profile, "gpus");
  gpu_count = 0;
  for (int i = 0; list && list->t == J_ARR && i < list->n && i < 16; i++) {
    gpus[i].index = i;
    gpus[i].p = list->items[i];
    gpu_count++;
  }
  initialised++;
  init_time = now_s();
  init_unix = unix_s();
  const char *log = getenv("LABNODE_FAKE_NVML_INIT_LOG");
  FILE *lf = log ? fopen(log, "a") : NULL;
  if (lf) {
    fprintf(lf, "nvmlInit %.6f\n", init_unix);
    fclose(lf);
  }
out:
  pthread_mutex_unlock(&lock);
  return rc;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return nvmlInit_v2(); }

nvmlReturn_t nvmlShutdown(void) {
  pthread_mutex_lock(&lock);
  nvmlReturn_t rc = initialised ? OK : UNINITIALIZED;
  if (initialised) initialised--;
  pthread_mutex_unlock(&lock);
  return rc;
}

const char *nvmlErrorString(nvmlReturn_t rc) {
  switch (rc) {
    case OK: return "Success";
    case NOT_SUPPORTED: return "Not Supported";
    case NOT_FOUND: return "Not Found";
    case DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case GPU_IS_LOST: return "GPU is lost";
    case INSUFFICIENT_SIZE: return "Insufficient Size";
    default: return "Unknown Error";
  }
}

/* Every device call starts here: checks the handle, simulates a lost GPU and a hang. */
static nvmlReturn_t enter(void *handle, const char *fn, const jval **p) {
  if (!initialised) return UNINITIALIZED;
  gpu *g = handle;
  if (!g || g < gpus || g >= gpus + gpu_count) return INVALID_ARGUMENT;
  *p = g->p;
  double lost;
  if (jnum(g->p, "lost_after_s", &lost) && now_s() - init_time >= lost) return GPU_IS_LOST;
  if (jnum(g->p, "lost_at_unix", &lost) && unix_s() >= lost) return GPU_IS_LOST;
  const char *flag = jstr(g->p, "lost_if_exists", NULL);
  if (flag && access(flag, F_OK) == 0) return GPU_IS_LOST;
  const char *hang = jstr(g->p, "hang", "");
  if (!strcmp(hang, fn)) for (;;) pause();
  return OK;
}

#define DEVICE(fn) const jval *p; nvmlReturn_t rc_ = enter(device, fn, &p); if (rc_) return rc_
#define FIELD(key, var) double var; if (!jnum(p, key, &var)) return NOT_SUPPORTED

static nvmlReturn_t copy_str(const char *s, char *out, unsigned int len) {
  if (!out) return INVALID_ARGUMENT;
  if (strlen(s) + 1 > len) return INSUFFICIENT_SIZE;
  strcpy(out, s);
  return OK;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *out, unsigned int len) {
  if (!initialised) return UNINITIALIZED;
  return copy_str(jstr(profile, "driver_version", "580.95.05"), out, len);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) {
  double d;
  if (!initialised) return UNINITIALIZED;
  if (!jnum(profile, "cuda_driver_version", &d)) return NOT_SUPPORTED;
  *v = (int)d;
  return OK;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
  if (!initialised) return UNINITIALIZED;
  *count = gpu_count;
  return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **device) {
  if (!initialised) return UNINITIALIZED;
  if (i >= (unsigned)gpu_count) return INVALID_ARGUMENT;
  *device = &gpus[i];
  return OK;
}

nvmlReturn_t nvmlDeviceGetIndex(void *device, unsigned int *index) {
  DEVICE("nvmlDeviceGetIndex");
  *index = ((gpu *)device)->index;
  return OK;
}

nvmlReturn_t nvmlDeviceGetName(void *device, char *out, unsigned int len) {
  DEVICE("nvmlDeviceGetName");
  return copy_str(jstr(p, "name", "Simulated GPU"), out, len);
}

nvmlReturn_t nvmlDeviceGetUUID(void *device, char *out, unsigned int len) {
  DEVICE("nvmlDeviceGetUUID");
  return copy_str(jstr(p, "uuid", "GPU-00000000-0000-0000-0000-000000000000"), out, len);
}

typedef struct {
  char busIdLegacy[16];
  unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
  char busId[32];
} pci_info;

nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *device, pci_info *pci) {
  DEVICE("nvmlDeviceGetPciInfo_v3");
  memset(pci, 0, sizeof *pci);
  const char *id = jstr(p, "pci_bus_id", "00000000:00:00.0");
  snprintf(pci->busId, sizeof pci->busId, "%s", id);
  snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%s", id + (strlen(id) > 12 ? 4 : 0));
  unsigned dom = 0, bus = 0, dev = 0;
  sscanf(id, "%x:%x:%x", &dom, &bus, &dev);
  pci->domain = dom, pci->bus = bus, pci->device = dev;
  pci->pciDeviceId = 0x1bb310de; /* GP104GL [Tesla P4] */
  return OK;
}

nvmlReturn_t nvmlDeviceGetPersistenceMode(void *device, int *mode) {
  DEVICE("nvmlDeviceGetPersistenceMode");
  FIELD("persistence_mode", v);
  *mode = v != 0;
  return OK;
}

typedef struct { unsigned int gpu, memory; } utilization;

nvmlReturn_t nvmlDeviceGetUtilizationRates(void *device, utilization *u) {
  DEVICE("nvmlDeviceGetUtilizationRates");
  FIELD("utilization_gpu_percent", g);
  FIELD("utilization_memory_percent", m);
  u->gpu = (unsigned)g, u->memory = (unsigned)m;
  return OK;
}

typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } memory_v2;

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *device, memory_v2 *m) {
  DEVICE("nvmlDeviceGetMemoryInfo_v2");
  FIELD("memory_total_mib", total);
  FIELD("memory_used_mib", used);
  m->total = (unsigned long long)total << 20;
  m->used = (unsigned long long)used << 20;
  m->reserved = 0;
  m->free = m->total - m->used;
  return OK;
}

nvmlReturn_t nvmlDeviceGetTemperature(void *device, int sensor, unsigned int *t) {
  DEVICE("nvmlDeviceGetTemperature");
  if (sensor != 0) return INVALID_ARGUMENT;
  FIELD("temperature_c", v);
  *t = (unsigned)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetTemperatureThreshold(void *device, int which, unsigned int *t) {
  DEVICE("nvmlDeviceGetTemperatureThreshold");
  const char *key = which == 0 ? "shutdown_temp_c" : which == 1 ? "slowdown_temp_c" : "";
  FIELD(key, v);
  *t = (unsigned)v;
  return OK;
}

/* Power in milliwatts: `power_mw`, or a triangle wave between `power_mw_min` and
 * `power_mw_max` with period `power_period_s` over wall-clock time (minimum at every
 * multiple of the period since the epoch), so a test can integrate it exactly. */
static int power_now(const jval *p, double *mw) {
  double lo, hi, period;
  if (jnum(p, "power_mw_min", &lo) && jnum(p, "power_mw_max", &hi) && jnum(p, "power_period_s", &period)) {
    double phase = fmod(unix_s(), period) / period;
    double tri = phase < 0.5 ? phase * 2 : 2 - phase * 2;
    *mw = lo + (hi - lo) * tri;
    return 1;
  }
  return jnum(p, "power_mw", mw);
}

/* The integral of power_now over wall-clock [0, t], in millijoules. */
static int power_integral(const jval *p, double t, double *mj) {
  double lo, hi, period, mw;
  if (jnum(p, "power_mw_min", &lo) && jnum(p, "power_mw_max", &hi) && jnum(p, "power_period_s", &period)) {
    double cycles = floor(t / period), x = t / period - cycles;
    double tri = x < 0.5 ? x * x : 2 * x - x * x - 0.5; /* integral of the unit triangle to x */
    *mj = period * (cycles * (lo + hi) / 2 + lo * x + (hi - lo) * tri);
    return 1;
  }
  if (!jnum(p, "power_mw", &mw)) return 0;
  *mj = mw * t;
  return 1;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(void *device, unsigned int *mw) {
  DEVICE("nvmlDeviceGetPowerUsage");
  double v;
  if (!power_now(p, &v)) return NOT_SUPPORTED;
  *mw = (unsigned)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(void *device, unsigned int *mw) {
  DEVICE("nvmlDeviceGetEnforcedPowerLimit");
  FIELD("power_limit_mw", v);
  *mw = (unsigned)v;
  return OK;
}

/* Millijoules since init, the exact integral of the power curve: only where
 * `energy_supported` is true. */
nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(void *device, unsigned long long *mj) {
  DEVICE("nvmlDeviceGetTotalEnergyConsumption");
  FIELD("energy_supported", supported);
  double from, to;
  if (!supported || !power_integral(p, init_unix, &from) || !power_integral(p, unix_s(), &to))
    return NOT_SUPPORTED;
  *mj = (unsigned long long)(to - from);
  return OK;
}

nvmlReturn_t nvmlDeviceGetFanSpeed_v2(void *device, unsigned int fan, unsigned int *pct) {
  DEVICE("nvmlDeviceGetFanSpeed_v2");
  (void)fan;
  FIELD("fan_percent", v);
  *pct = (unsigned)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetNumFans(void *device, unsigned int *n) {
  DEVICE("nvmlDeviceGetNumFans");
  double v;
  *n = jnum(p, "fan_percent", &v) ? 1 : 0;
  return OK;
}

nvmlReturn_t nvmlDeviceGetClockInfo(void *device, int type, unsigned int *mhz) {
  DEVICE("nvmlDeviceGetClockInfo");
  const char *key = type == 1 ? "sm_clock_mhz" : type == 2 ? "mem_clock_mhz" : type == 0 ? "graphics_clock_mhz" : "";
  FIELD(key, v);
  *mhz = (unsigned)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetPcieThroughput(void *device, int counter, unsigned int *kbs) {
  DEVICE("nvmlDeviceGetPcieThroughput");
  const char *key = counter == 0 ? "pcie_tx_kbs" : counter == 1 ? "pcie_rx_kbs" : "";
  FIELD(key, v);
  *kbs = (unsigned)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(void *device, unsigned int *gen) {
  DEVICE("nvmlDeviceGetCurrPcieLinkGeneration");
  FIELD("pcie_gen", v);
  *gen = (unsigned)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(void *device, unsigned int *width) {
  DEVICE("nvmlDeviceGetCurrPcieLinkWidth");
  FIELD("pcie_width", v);
  *width = (unsigned)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetPerformanceState(void *device, int *pstate) {
  DEVICE("nvmlDeviceGetPerformanceState");
  FIELD("pstate", v);
  *pstate = (int)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(void *device, unsigned long long *r) {
  DEVICE("nvmlDeviceGetCurrentClocksThrottleReasons");
  FIELD("throttle_reasons", v);
  *r = (unsigned long long)v;
  return OK;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(void *device, unsigned long long *r) {
  return nvmlDeviceGetCurrentClocksThrottleReasons(device, r);
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(void *device, int type, int counter, unsigned long long *n) {
  DEVICE("nvmlDeviceGetTotalEccErrors");
  const jval *ecc = jget(p, "ecc");
  if (!ecc || ecc->t != J_OBJ) return NOT_SUPPORTED;
  char key[64];
  snprintf(key, sizeof key, "%s_%s", counter == 0 ? "volatile" : "aggregate",
           type == 0 ? "corrected" : "uncorrected");
  double v;
  if (!jnum(ecc, key, &v)) return NOT_SUPPORTED;
  *n = (unsigned long long)v;
  return OK;
}

static nvmlReturn_t retired(void *device, int cause, unsigned int *count,
                            unsigned long long *addresses, unsigned long long *timestamps) {
  DEVICE("nvmlDeviceGetRetiredPages");
  FIELD(cause == 0 ? "retired_pages_sbe" : "retired_pages_dbe", v);
  unsigned have = (unsigned)v;
  if (*count < have || !addresses) {
    *count = have;
    return have ? INSUFFICIENT_SIZE : OK;
  }
  for (unsigned i = 0; i < have; i++) {
    addresses[i] = 0x1000ull * (i + 1);
    if (timestamps) timestamps[i] = 1700000000ull + i;
  }
  *count = have;
  return OK;
}

nvmlReturn_t nvmlDeviceGetRetiredPages(void *device, int cause, unsigned int *count, unsigned long long *addresses) {
  return retired(device, cause, count, addresses, NULL);
}

nvmlReturn_t nvmlDeviceGetRetiredPages_v2(void *device, int cause, unsigned int *count,
                                          unsigned long long *addresses, unsigned long long *timestamps) {
  return retired(device, cause, count, addresses, timestamps);
}

typedef struct { unsigned int pid; unsigned long long used; unsigned int gi, ci; } process_info;

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count, process_info *out) {
  DEVICE("nvmlDeviceGetComputeRunningProcesses_v3");
  const jval *procs = jget(p, "processes");
  unsigned have = procs && procs->t == J_ARR ? (unsigned)procs->n : 0;
  if (*count < have || !out) {
    *count = have;
    return have ? INSUFFICIENT_SIZE : OK;
  }
  for (unsigned i = 0; i < have; i++) {
    double pid = 0, mib;
    jnum(procs->items[i], "pid", &pid);
    out[i].pid = (unsigned)pid;
    /* `used_mib: null`: NVML_VALUE_NOT_AVAILABLE, as where NVML cannot see the usage. */
    out[i].used = jnum(procs->items[i], "used_mib", &mib) ? (unsigned long long)mib << 20 : ~0ull;
    out[i].gi = out[i].ci = 0xFFFFFFFF;
  }
  *count = have;
  return OK;
}

typedef struct { unsigned long long ts; union { double d; unsigned int ui; unsigned long long ull; } v; } sample;

/* Utilization samples: NVML keeps a ring of them, one per `utilization_sample_period_s`
 * (default 1/6 s, NVML's own rate) on a wall-clock grid, covering the last
 * `utilization_buffer_s` (default 20 s). A sample taken before nvmlInit has the value of
 * `utilization_gpu_percent_before_init` (`_memory_`) where the profile gives one (what the
 * GPU did before this process started), else the current value. As NVML does, NOT_FOUND
 * when no sample is newer than `last_seen`. Power samples are not simulated. */
nvmlReturn_t nvmlDeviceGetSamples(void *device, int type, unsigned long long last_seen,
                                  int *value_type, unsigned int *count, sample *out) {
  DEVICE("nvmlDeviceGetSamples");
  const char *key = type == 1 ? "utilization_gpu_percent" : type == 2 ? "utilization_memory_percent" : NULL;
  if (!key) return NOT_SUPPORTED;
  FIELD(key, v);
  double flag, before = 0, period = 1.0 / 6, span = 20;
  if (!jnum(p, "utilization_samples", &flag) || !flag) return NOT_SUPPORTED;
  char before_key[64];
  snprintf(before_key, sizeof before_key, "%s_before_init", key);
  int has_before = jnum(p, before_key, &before);
  jnum(p, "utilization_sample_period_s", &period);
  jnum(p, "utilization_buffer_s", &span);
  unsigned long long step = period > 1e-6 ? (unsigned long long)(period * 1e6) : 1;
  unsigned long long now_us = (unsigned long long)(unix_s() * 1e6);
  unsigned long long init_us = (unsigned long long)(init_unix * 1e6);
  unsigned long long oldest = now_us - (unsigned long long)(span * 1e6);
  unsigned long long after = last_seen > oldest ? last_seen : oldest;
  unsigned long long first = (after / step + 1) * step, last = now_us / step * step;
  if (first > last) return NOT_FOUND;
  unsigned have = (unsigned)((last - first) / step + 1);
  *value_type = 1; /* NVML_VALUE_TYPE_UNSIGNED_INT */
  if (!out) { *count = have; return OK; }
  if (*count < have) have = *count; /* the oldest first: the rest comes next time */
  for (unsigned i = 0; i < have; i++) {
    out[i].ts = first + i * step;
    out[i].v.ull = 0;
    out[i].v.ui = (unsigned)(has_before && out[i].ts < init_us ? before : v);
  }
  *count = have;
  return OK;
}
