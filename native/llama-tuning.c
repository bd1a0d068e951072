/*
 * llama-tuning: two settings that node-llama-cpp 3.21.1 does not expose, applied to the very
 * llama.cpp libraries it loads. Measured on the 2-core machines Parley is built on (see
 * docs/engine.md and ../shared/notes/engine-measurements.md).
 *
 * 1. A persistent ggml threadpool per llama_context. node-llama-cpp never calls
 *    llama_attach_threadpool, and its prebuilt libraries have no OpenMP, so ggml creates and
 *    joins a throw-away threadpool for every graph computation (every decode step). On
 *    Qwen2-0.5B q8_0 with 2 threads that made a one-token step 24 ms instead of llama.cpp's own
 *    16 ms; with a pool attached it is 16 ms.
 * 2. The CPU kernel variant. The prebuilt package ships one libggml-cpu-<variant>.so per
 *    instruction set and ggml loads the highest-scoring one. That is not always the fastest:
 *    on AVX-512 EPYCs the zen4 variant prefills 1.27x faster than haswell (AVX2) but decodes
 *    batches of 4-8 tokens 1.17-1.3x slower. Parley lets the operator choose.
 *
 * How: this addon is loaded with RTLD_GLOBAL before node-llama-cpp's addon, so the dynamic
 * linker binds that addon's calls to llama_init_from_model, llama_free and
 * ggml_backend_load_all_from_path to the definitions below (ELF symbol interposition). Each
 * one calls the real function, found at call time among the loaded objects, and adds to it.
 * Nothing else changes: every other call goes straight to llama.cpp.
 *
 * Contract: configure() must run before node-llama-cpp loads its backends. Linux (glibc)
 * only; elsewhere Parley does not load this addon.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <node_api.h>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "llama-native.h"

/* ---- settings and counters, shared by the hooks (any thread) and JavaScript ---- */

/* Flags read by the hooks on libuv worker threads are atomics; the rest is under `lock`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int enabled = 0;             /* hooks do nothing until configure() */
static atomic_int threadpool_enabled = 1;  /* attach a pool to each new context */
static atomic_int poll_level = 0;          /* ggml's default is 50; 0 measured faster here (docs/engine.md) */
static char cpu_kernels[4096] = "";        /* "" = ggml's own choice; a variant name, or a library's path */
static char last_error[256] = "";
static long pools_attached = 0;
static long pools_live = 0;

/* Exported so that a second copy of this addon (another path) is recognised and skipped when
 * looking for the real functions: two copies would otherwise call each other forever. */
__attribute__((visibility("default"))) const int parley_llama_tuning_marker = 1;
#define HOOK __attribute__((visibility("default")))

static void set_error(const char * message) {
    pthread_mutex_lock(&lock);
    snprintf(last_error, sizeof last_error, "%s", message);
    pthread_mutex_unlock(&lock);
}

/* ---- finding the real functions among the loaded objects ---- */

struct names {
    char ** list;
    size_t count;
    size_t capacity;
};

static int collect_name(struct dl_phdr_info * info, size_t size, void * data) {
    (void) size;
    struct names * names = data;
    if (info->dlpi_name == NULL || info->dlpi_name[0] == '\0') return 0; /* the executable */
    if (names->count == names->capacity) {
        size_t capacity = names->capacity == 0 ? 64 : names->capacity * 2;
        char ** list = realloc(names->list, capacity * sizeof *list);
        if (list == NULL) return 1;
        names->list = list;
        names->capacity = capacity;
    }
    names->list[names->count] = strdup(info->dlpi_name);
    if (names->list[names->count] != NULL) names->count++;
    return 0;
}

/* The first definition of `name` in a loaded object that is not a copy of this addon, or
 * NULL. The names are collected first and opened after: dlopen inside dl_iterate_phdr's
 * callback risks the loader's locks. */
void * find_real(const char * name) {
    struct names names = { NULL, 0, 0 };
    dl_iterate_phdr(collect_name, &names);
    void * found = NULL;
    for (size_t i = 0; i < names.count; i++) {
        if (found == NULL) {
            void * handle = dlopen(names.list[i], RTLD_NOLOAD | RTLD_LAZY);
            if (handle != NULL) {
                /* dlsym searches the object and its dependencies; an object that is (or
                 * depends on) a copy of this addon would answer with a hook. */
                if (dlsym(handle, "parley_llama_tuning_marker") == NULL) found = dlsym(handle, name);
                dlclose(handle);
            }
        }
        free(names.list[i]);
    }
    free(names.list);
    return found;
}

#define REAL(type, name) ((type) find_real(name))

/* The real function a hook wraps. Without it the hook cannot do its caller's work at all. */
static void * need_real(const char * name) {
    void * real = find_real(name);
    if (real == NULL) {
        fprintf(stderr, "parley llama-tuning: %s not found in any loaded library\n", name);
        abort();
    }
    return real;
}

/* ggml-cpu's own functions live in whichever variant was loaded: ask its registry. */
static void * cpu_proc(const char * name) {
    typedef ggml_backend_dev_t (*by_type_t)(enum ggml_backend_dev_type);
    typedef ggml_backend_reg_t (*dev_reg_t)(ggml_backend_dev_t);
    typedef void * (*proc_t)(ggml_backend_reg_t, const char *);
    by_type_t by_type = REAL(by_type_t, "ggml_backend_dev_by_type");
    dev_reg_t dev_reg = REAL(dev_reg_t, "ggml_backend_dev_backend_reg");
    proc_t proc = REAL(proc_t, "ggml_backend_reg_get_proc_address");
    if (by_type == NULL || dev_reg == NULL || proc == NULL) return NULL;
    ggml_backend_dev_t dev = by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (dev == NULL) return NULL;
    return proc(dev_reg(dev), name);
}

/* ---- hook 1: a persistent threadpool for every context; the registry of contexts ---- */

/* Every live context this addon saw created, numbered in order, with its pool (NULL when the
 * threadpool is off or could not be made) and the decode loop bound to it (NULL when none). */
struct attached {
    struct llama_context * ctx;
    long serial;
    ggml_threadpool_t pool;
    struct decode_loop * loop;
    struct attached * next;
};
static struct attached * contexts = NULL;
static long serials = 0;

typedef struct llama_context * (*init_t)(struct llama_model *, struct llama_context_params);
typedef void (*free_ctx_t)(struct llama_context *);
typedef void (*attach_t)(struct llama_context *, ggml_threadpool_t, ggml_threadpool_t);
typedef struct ggml_threadpool_params (*params_default_t)(int);
typedef ggml_threadpool_t (*pool_new_t)(struct ggml_threadpool_params *);
typedef void (*pool_free_t)(ggml_threadpool_t);

/* A new pool attached to `ctx`, or NULL (then ggml keeps its per-step threads). */
static ggml_threadpool_t attach_pool(struct llama_context * ctx, struct llama_context_params params) {
    params_default_t params_default = REAL(params_default_t, "ggml_threadpool_params_default");
    attach_t attach = REAL(attach_t, "llama_attach_threadpool");
    pool_new_t pool_new = (pool_new_t) cpu_proc("ggml_threadpool_new");
    if (params_default == NULL || attach == NULL || pool_new == NULL) {
        set_error("threadpool functions not found; this context uses ggml's per-step threads");
        return NULL;
    }
    /* One pool serves both decode (n_threads) and prompt batches (n_threads_batch): ggml uses
     * min(requested, pool size) threads per graph, so the pool takes the larger count. */
    int threads = params.n_threads > params.n_threads_batch ? params.n_threads : params.n_threads_batch;
    if (threads < 1) threads = 1;
    struct ggml_threadpool_params pool_params = params_default(threads);
    pool_params.poll = (uint32_t) poll_level;
    ggml_threadpool_t pool = pool_new(&pool_params);
    if (pool == NULL) {
        set_error("could not create a ggml threadpool; this context uses ggml's per-step threads");
        return NULL;
    }
    attach(ctx, pool, NULL);
    return pool;
}

static void free_pool(ggml_threadpool_t pool) {
    pool_free_t pool_free = (pool_free_t) cpu_proc("ggml_threadpool_free");
    if (pool != NULL && pool_free != NULL) pool_free(pool);
}

HOOK struct llama_context * llama_init_from_model(struct llama_model * model, struct llama_context_params params) {
    init_t real = (init_t) need_real("llama_init_from_model");
    struct llama_context * ctx = real(model, params);
    if (ctx == NULL || !enabled) return ctx;

    struct attached * entry = calloc(1, sizeof *entry);
    if (entry == NULL) {
        set_error("out of memory registering a context; it runs untuned");
        return ctx;
    }
    entry->ctx = ctx;
    if (threadpool_enabled) entry->pool = attach_pool(ctx, params);
    pthread_mutex_lock(&lock);
    entry->serial = ++serials;
    entry->next = contexts;
    contexts = entry;
    if (entry->pool != NULL) {
        pools_attached++;
        pools_live++;
    }
    pthread_mutex_unlock(&lock);
    return ctx;
}

HOOK void llama_free(struct llama_context * ctx) {
    free_ctx_t real = (free_ctx_t) need_real("llama_free");
    /* Take the entry off the list first: once the context is freed, another thread's
     * llama_init_from_model may get the same address back and list itself under it. */
    pthread_mutex_lock(&lock);
    struct attached ** link = &contexts;
    struct attached * entry = NULL;
    while (*link != NULL) {
        if ((*link)->ctx == ctx) {
            entry = *link;
            *link = entry->next;
            if (entry->pool != NULL) pools_live--;
            break;
        }
        link = &(*link)->next;
    }
    /* A decode loop still bound to this context stops first, its step in progress finished.
     * Parley closes its loop before disposing a context; this covers every other way a context
     * goes, a close racing this free included (a closing loop halts before it unbinds). Under
     * the lock, so that the loop's owner cannot free it meanwhile (unbinding takes this lock);
     * the loop's thread never takes it. */
    if (entry != NULL && entry->loop != NULL) decode_loop_halt(entry->loop);
    pthread_mutex_unlock(&lock);
    /* The context goes before its pool: once llama_free returns no graph can be using it. */
    real(ctx);
    if (entry == NULL) return;
    free_pool(entry->pool);
    free(entry);
}


size_t live_context_serials(long * out, size_t capacity) {
    size_t count = 0;
    pthread_mutex_lock(&lock);
    for (struct attached * entry = contexts; entry != NULL; entry = entry->next) {
        if (count < capacity) out[count] = entry->serial;
        count++;
    }
    pthread_mutex_unlock(&lock);
    return count;
}

long context_serial(void) {
    pthread_mutex_lock(&lock);
    long serial = serials;
    pthread_mutex_unlock(&lock);
    return serial;
}

int context_claim(long serial, struct decode_loop * loop, int (*start)(struct decode_loop *, struct llama_context *)) {
    int claimed = 0;
    pthread_mutex_lock(&lock);
    for (struct attached * entry = contexts; entry != NULL; entry = entry->next) {
        if (entry->serial == serial && entry->loop == NULL && start(loop, entry->ctx)) {
            entry->loop = loop;
            claimed = 1;
        }
    }
    pthread_mutex_unlock(&lock);
    return claimed;
}

void context_unbind_loop(struct llama_context * ctx, struct decode_loop * loop) {
    pthread_mutex_lock(&lock);
    for (struct attached * entry = contexts; entry != NULL; entry = entry->next) {
        if (entry->ctx == ctx && entry->loop == loop) entry->loop = NULL;
    }
    pthread_mutex_unlock(&lock);
}

/* ---- hook 2: the CPU kernel variant ---- */

typedef void (*load_all_t)(const char *);
typedef ggml_backend_reg_t (*load_t)(const char *);

HOOK void ggml_backend_load_all_from_path(const char * dir) {
    load_all_t real = (load_all_t) need_real("ggml_backend_load_all_from_path");
    pthread_mutex_lock(&lock);
    char wanted[sizeof cpu_kernels];
    memcpy(wanted, cpu_kernels, sizeof wanted);
    int active = enabled;
    pthread_mutex_unlock(&lock);

    if (active && wanted[0] != '\0' && dir != NULL) {
        /* A name ("haswell") is a prebuilt variant in `dir`; a path (it has a '/') is a backend
         * built elsewhere: Parley's own, build/native/libggml-cpu-parley.so. */
        char path[sizeof cpu_kernels + 64];
        if (strchr(wanted, '/') != NULL) {
            snprintf(path, sizeof path, "%s", wanted);
        } else {
            snprintf(path, sizeof path, "%s/libggml-cpu-%s.so", dir, wanted);
        }
        load_t load = REAL(load_t, "ggml_backend_load");
        if (access(path, R_OK) != 0) {
            char message[256];
            snprintf(message, sizeof message, "CPU kernels \"%s\" are not in this build; using ggml's choice", wanted);
            set_error(message);
        } else if (load != NULL && load(path) != NULL) {
            /* Only this variant: the real function would also load ggml's best CPU variant
             * (and any GPU backend in `dir`, and $GGML_BACKEND_PATH), and the first CPU
             * backend registered is the one llama.cpp uses. Parley runs CPU-only builds. */
            return;
        } else {
            char message[256];
            snprintf(message, sizeof message, "CPU kernels \"%s\" do not run on this CPU; using ggml's choice", wanted);
            set_error(message);
        }
    }
    real(dir);
}

/* ---- JavaScript ---- */

/* The CPU variant ggml registered ("zen4", "haswell", ...), into `out`; "" before any. */
static void loaded_variant(char * out, size_t size) {
    out[0] = '\0';
    Dl_info info;
    void * symbol = cpu_proc("ggml_threadpool_new");
    if (symbol == NULL || dladdr(symbol, &info) == 0 || info.dli_fname == NULL) return;
    const char * base = strrchr(info.dli_fname, '/');
    base = base ? base + 1 : info.dli_fname;
    if (strncmp(base, "libggml-cpu-", 12) != 0) return;
    snprintf(out, size, "%s", base + 12);
    char * dot = strstr(out, ".so");
    if (dot) *dot = '\0';
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "llama-tuning: " #call " failed"); return NULL; } } while (0)

/* configure({ threadpool: boolean, poll: number, cpuKernels: string | null }) */
static napi_value configure(napi_env env, napi_callback_info info) {
    size_t argc = 1;
    napi_value argv[1];
    CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc < 1) {
        napi_throw_type_error(env, NULL, "configure(options) needs an options object");
        return NULL;
    }
    napi_value value;
    napi_valuetype type;
    pthread_mutex_lock(&lock);
    if (napi_get_named_property(env, argv[0], "threadpool", &value) == napi_ok &&
        napi_typeof(env, value, &type) == napi_ok && type == napi_boolean) {
        bool on;
        napi_get_value_bool(env, value, &on);
        threadpool_enabled = on;
    }
    if (napi_get_named_property(env, argv[0], "poll", &value) == napi_ok &&
        napi_typeof(env, value, &type) == napi_ok && type == napi_number) {
        int32_t poll;
        napi_get_value_int32(env, value, &poll);
        poll_level = poll < 0 ? 0 : poll > 100 ? 100 : poll;
    }
    cpu_kernels[0] = '\0';
    if (napi_get_named_property(env, argv[0], "cpuKernels", &value) == napi_ok &&
        napi_typeof(env, value, &type) == napi_ok && type == napi_string) {
        size_t length;
        napi_get_value_string_utf8(env, value, cpu_kernels, sizeof cpu_kernels, &length);
    }
    enabled = 1;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static napi_value make_string(napi_env env, const char * text) {
    napi_value value;
    if (text[0] == '\0') {
        napi_get_null(env, &value);
    } else {
        napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &value);
    }
    return value;
}

/* stats(): { poolsAttached, poolsLive, poll, cpuKernelsRequested, cpuKernelsLoaded, lastError } */
static napi_value stats(napi_env env, napi_callback_info info) {
    (void) info;
    char variant[64];
    loaded_variant(variant, sizeof variant);
    napi_value result, value;
    CHECK(napi_create_object(env, &result));
    pthread_mutex_lock(&lock);
    long attached = pools_attached, live = pools_live;
    int poll = poll_level;
    char requested[sizeof cpu_kernels], error[256];
    memcpy(requested, cpu_kernels, sizeof requested);
    memcpy(error, last_error, sizeof error);
    pthread_mutex_unlock(&lock);
    napi_create_int64(env, attached, &value);
    napi_set_named_property(env, result, "poolsAttached", value);
    napi_create_int64(env, live, &value);
    napi_set_named_property(env, result, "poolsLive", value);
    napi_create_int32(env, poll, &value);
    napi_set_named_property(env, result, "poll", value);
    napi_set_named_property(env, result, "cpuKernelsRequested", make_string(env, requested));
    napi_set_named_property(env, result, "cpuKernelsLoaded", make_string(env, variant));
    napi_set_named_property(env, result, "lastError", make_string(env, error));
    return result;
}

NAPI_MODULE_INIT() {
    napi_property_descriptor properties[] = {
        { "configure", NULL, configure, NULL, NULL, NULL, napi_default, NULL },
        { "stats", NULL, stats, NULL, NULL, NULL, napi_default, NULL },
    };
    if (napi_define_properties(env, exports, 2, properties) != napi_ok) return NULL;
    if (decode_loop_define(env, exports) != napi_ok) return NULL;
    return exports;
}
