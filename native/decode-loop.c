/*
 * Parley's decode loop: llama-server's slot loop, for one llama_context that node-llama-cpp
 * created. A thread of its own decodes every running sequence's next token (and new prompts'
 * chunks) in one llama_decode per step, samples each sequence, and posts the step's tokens to
 * JavaScript in one call. JavaScript reads them while the next step decodes.
 *
 * Why: through node-llama-cpp, one step costs a decode call and one sampling call per sequence,
 * each a hop to a libuv worker and back (measured ~0.2-0.3 ms a step, docs/engine.md). That
 * is most of a step on small models, and 2-6 ms of a batch-of-8 step on larger ones under
 * load. Here a step costs one llama_decode plus sampling, as in llama-server.
 *
 * Contract with JavaScript (src/backends/local/native-decode-loop.ts):
 *   - start(seq, prompt, keep, limit, sampling) begins a generation on a free sequence: the
 *     sequence's cache keeps positions [0, keep) (the prefix `prompt` shares with it), the
 *     rest of `prompt` is decoded after them, and up to `limit` tokens are sampled. keep must
 *     be below the prompt's length. Where the cache cannot keep a prefix (a recurrent model's
 *     state, a sliding window that dropped early positions), the whole prompt is decoded.
 *   - events come as an Int32Array of (seq, kind, value, n_past) quadruples, in order: a
 *     TOKEN (value: the token), then at the end exactly one END (value: why; n_past: the
 *     positions the sequence's cache now holds). After its END a sequence is free again.
 *   - ack(seq, n): the reader took n tokens. A sequence more than `max_ahead` tokens ahead of
 *     its reader sits steps out, so a slow client neither holds the others up nor runs far
 *     ahead of what it reads.
 *   - cancel(seq) ends a generation at the next step (END with END_CANCELLED).
 *   - close() stops the thread; generations still running get no END. Where the context is
 *     freed first (llama_free's hook halts the loop), they get END_ERROR, and no start is
 *     taken any more.
 * Only this thread touches the context while the loop runs: JavaScript must not evaluate on
 * it through node-llama-cpp meanwhile.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama-native.h"

enum { EV_TOKEN = 0, EV_END = 1 };
/* Why a generation ended (an END event's value). */
enum { END_EOG = 0, END_LIMIT = 1, END_CANCELLED = 2, END_ERROR = 3 };
enum { SLOT_FREE = 0, SLOT_STARTING, SLOT_RUNNING };

/* ---- the llama.cpp functions the loop calls, found once among the loaded objects ---- */

static struct {
    int32_t (*decode)(struct llama_context *, struct llama_batch);
    struct llama_batch (*batch_init)(int32_t, int32_t, int32_t);
    void (*batch_free)(struct llama_batch);
    const struct llama_model * (*get_model)(const struct llama_context *);
    llama_memory_t (*get_memory)(const struct llama_context *);
    bool (*memory_seq_rm)(llama_memory_t, llama_seq_id, llama_pos, llama_pos);
    llama_pos (*memory_seq_pos_min)(llama_memory_t, llama_seq_id);
    llama_pos (*memory_seq_pos_max)(llama_memory_t, llama_seq_id);
    const struct llama_vocab * (*model_get_vocab)(const struct llama_model *);
    bool (*vocab_is_eog)(const struct llama_vocab *, llama_token);
    int32_t (*vocab_n_tokens)(const struct llama_vocab *);
    uint32_t (*n_batch)(const struct llama_context *);
    uint32_t (*n_seq_max)(const struct llama_context *);
    struct llama_sampler_chain_params (*chain_default_params)(void);
    struct llama_sampler * (*chain_init)(struct llama_sampler_chain_params);
    void (*chain_add)(struct llama_sampler *, struct llama_sampler *);
    struct llama_sampler * (*init_greedy)(void);
    struct llama_sampler * (*init_top_k)(int32_t);
    struct llama_sampler * (*init_top_p)(float, size_t);
    struct llama_sampler * (*init_temp)(float);
    struct llama_sampler * (*init_dist)(uint32_t);
    struct llama_sampler * (*init_penalties)(int32_t, int32_t, float, float, float);
    llama_token (*sample)(struct llama_sampler *, struct llama_context *, int32_t);
    float * (*get_logits_ith)(struct llama_context *, int32_t);
    void (*sampler_free)(struct llama_sampler *);
} api;

/* NULL when every function was found, else the name of one that was not. Once per process
 * (loops' threads read the table): see resolve_api. */
static const char * api_missing = NULL;

static void resolve_api_once(void) {
#define RESOLVE(field, name) \
    if ((*(void **) &api.field = find_real(name)) == NULL) { api_missing = name; return; }
    RESOLVE(decode, "llama_decode")
    RESOLVE(batch_init, "llama_batch_init")
    RESOLVE(batch_free, "llama_batch_free")
    RESOLVE(get_model, "llama_get_model")
    RESOLVE(get_memory, "llama_get_memory")
    RESOLVE(memory_seq_rm, "llama_memory_seq_rm")
    RESOLVE(memory_seq_pos_min, "llama_memory_seq_pos_min")
    RESOLVE(memory_seq_pos_max, "llama_memory_seq_pos_max")
    RESOLVE(model_get_vocab, "llama_model_get_vocab")
    RESOLVE(vocab_is_eog, "llama_vocab_is_eog")
    RESOLVE(vocab_n_tokens, "llama_vocab_n_tokens")
    RESOLVE(n_batch, "llama_n_batch")
    RESOLVE(n_seq_max, "llama_n_seq_max")
    RESOLVE(chain_default_params, "llama_sampler_chain_default_params")
    RESOLVE(chain_init, "llama_sampler_chain_init")
    RESOLVE(chain_add, "llama_sampler_chain_add")
    RESOLVE(init_greedy, "llama_sampler_init_greedy")
    RESOLVE(init_top_k, "llama_sampler_init_top_k")
    RESOLVE(init_top_p, "llama_sampler_init_top_p")
    RESOLVE(init_temp, "llama_sampler_init_temp")
    RESOLVE(init_dist, "llama_sampler_init_dist")
    RESOLVE(init_penalties, "llama_sampler_init_penalties")
    RESOLVE(sample, "llama_sampler_sample")
    RESOLVE(get_logits_ith, "llama_get_logits_ith")
    RESOLVE(sampler_free, "llama_sampler_free")
#undef RESOLVE
}

static const char * resolve_api(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, resolve_api_once);
    return api_missing;
}

/* ---- the loop ---- */

struct slot {
    /* Written by JavaScript under the loop's lock while FREE; the thread's once RUNNING. */
    int state;
    llama_token * prompt;
    int32_t n_prompt;
    llama_pos keep;
    int32_t limit;
    struct llama_sampler * chain;
    bool argmax;         /* greedy without penalties: the chain is skipped for a plain argmax */
    /* Written by JavaScript under the lock at any time. */
    int cancel;
    int32_t acked;
    /* The thread's own. */
    int32_t prompt_done; /* prompt tokens in the cache (from `keep` on at the start) */
    llama_pos n_past;    /* positions in the cache */
    llama_token last;    /* sampled, not yet decoded */
    bool has_last;
    int32_t generated;   /* tokens sampled */
    int32_t logit_index; /* its logits' row in this step's batch, or -1 */
    int32_t batched;     /* tokens it put in this step's batch */
    bool decode_now;     /* decided under the lock: its last token goes in this step's batch */
    bool prefill_now;    /* decided under the lock: a chunk of its prompt may */
    int ended;           /* END_* + 1 once it ended this step, else 0 */
};

struct event {
    int32_t seq, kind, value, n_past;
};

struct decode_loop {
    struct llama_context * ctx;
    const struct llama_vocab * vocab;
    llama_memory_t memory;
    int32_t n_vocab, n_batch, n_seq, max_ahead;
    int32_t first_prefill; /* the sequence whose prompt goes first in the next batch (rotates, for fairness) */
    struct slot * slots;
    struct llama_batch batch;
    struct event * events; /* this step's, at most two per sequence */
    int32_t n_events;

    pthread_mutex_t mu;
    pthread_cond_t wake;
    int quit;
    int halted; /* the thread has stopped: no start is taken */
    pthread_t thread;
    pthread_mutex_t join_mu; /* one joiner at a time */
    int joined;

    napi_threadsafe_function tsfn;
    int32_t js_running; /* generations started and not yet heard to END; JavaScript's thread only */
    int closed;
};

/* Frees what a generation's start gave its slot (its prompt and sampler chain). */
static void release_slot(struct slot * slot) {
    if (slot->chain != NULL) api.sampler_free(slot->chain);
    free(slot->prompt);
    slot->chain = NULL;
    slot->prompt = NULL;
}

static void end_slot(struct decode_loop * loop, int32_t seq, int why) {
    struct slot * slot = &loop->slots[seq];
    loop->events[loop->n_events++] = (struct event) { seq, EV_END, why, slot->n_past };
    release_slot(slot);
    slot->state = SLOT_FREE;
}

/* Hands this step's events to JavaScript, in one message whose first element holds the count.
 * Under the lock: slots ended this step are FREE before JavaScript hears of it, so it may start
 * them again at once. */
static void post_events(struct decode_loop * loop) {
    if (loop->n_events == 0) return;
    struct event * message = malloc(((size_t) loop->n_events + 1) * sizeof *message);
    if (message != NULL) {
        message[0] = (struct event) { loop->n_events, 0, 0, 0 };
        memcpy(message + 1, loop->events, (size_t) loop->n_events * sizeof *message);
        if (napi_call_threadsafe_function(loop->tsfn, message, napi_tsfn_nonblocking) != napi_ok) free(message);
    }
    loop->n_events = 0;
}

/* Under the lock: picks up new and cancelled generations; true when there is a batch to decode. */
static bool plan_step(struct decode_loop * loop) {
    bool work = false;
    for (int32_t seq = 0; seq < loop->n_seq; seq++) {
        struct slot * slot = &loop->slots[seq];
        slot->ended = 0;
        slot->decode_now = false;
        slot->prefill_now = false;
        if (slot->state == SLOT_STARTING) {
            /* Keep the reused prefix; drop whatever the last generation left after it. A
             * cache that cannot (a recurrent state, or a sliding window that already dropped
             * early positions), or that holds less than the caller counted on, starts over
             * from the first token. */
            llama_pos keep = slot->keep;
            if (keep > 0 &&
                (api.memory_seq_pos_min(loop->memory, seq) > 0 || api.memory_seq_pos_max(loop->memory, seq) + 1 < keep ||
                 !api.memory_seq_rm(loop->memory, seq, keep, -1)))
                keep = 0;
            if (keep == 0) api.memory_seq_rm(loop->memory, seq, -1, -1);
            slot->n_past = keep;
            slot->prompt_done = keep;
            slot->generated = 0;
            slot->has_last = false;
            slot->state = SLOT_RUNNING;
        }
        if (slot->state != SLOT_RUNNING) continue;
        if (slot->cancel) {
            end_slot(loop, seq, END_CANCELLED);
            continue;
        }
        if (slot->prompt_done < slot->n_prompt) {
            slot->prefill_now = true;
            work = true;
        } else if (slot->has_last && slot->generated - slot->acked < loop->max_ahead) {
            slot->decode_now = true;
            work = true;
        }
    }
    return work;
}

static void batch_add(struct llama_batch * batch, llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
    int32_t i = batch->n_tokens++;
    batch->token[i] = token;
    batch->pos[i] = pos;
    batch->n_seq_id[i] = 1;
    batch->seq_id[i][0] = seq;
    batch->logits[i] = logits;
}

/* Outside the lock: every decoding sequence's last token, then prompt chunks while room is
 * left, starting with a different sequence's prompt each step. `only` >= 0: that sequence alone. */
static void build_batch(struct decode_loop * loop, int32_t only) {
    struct llama_batch * batch = &loop->batch;
    batch->n_tokens = 0;
    for (int32_t seq = 0; seq < loop->n_seq; seq++) {
        struct slot * slot = &loop->slots[seq];
        slot->logit_index = -1;
        slot->batched = 0;
        if (!slot->decode_now || (only >= 0 && seq != only)) continue;
        slot->logit_index = batch->n_tokens;
        slot->batched = 1;
        batch_add(batch, slot->last, slot->n_past, seq, true);
    }
    for (int32_t i = 0; i < loop->n_seq && batch->n_tokens < loop->n_batch; i++) {
        int32_t seq = (loop->first_prefill + i) % loop->n_seq;
        struct slot * slot = &loop->slots[seq];
        if (!slot->prefill_now || (only >= 0 && seq != only)) continue;
        int32_t take = slot->n_prompt - slot->prompt_done;
        if (take > loop->n_batch - batch->n_tokens) take = loop->n_batch - batch->n_tokens;
        bool completes = slot->prompt_done + take == slot->n_prompt;
        for (int32_t i = 0; i < take; i++) {
            bool last = completes && i == take - 1;
            if (last) slot->logit_index = batch->n_tokens;
            batch_add(batch, slot->prompt[slot->prompt_done + i], slot->n_past + i, seq, last);
        }
        slot->batched = take;
    }
}

/* Greedy sampling without the sampler chain, which first copies every logit into a candidate
 * array (152k entries for Qwen2, per sequence per step). The first of equal maxima wins, as in
 * llama.cpp's greedy sampler. */
static llama_token argmax(struct decode_loop * loop, int32_t index) {
    const float * logits = api.get_logits_ith(loop->ctx, index);
    llama_token best = 0;
    for (llama_token token = 1; token < loop->n_vocab; token++) {
        if (logits[token] > logits[best]) best = token;
    }
    return best;
}

/* Outside the lock, after a successful decode: advance each sequence and sample the ready ones. */
static void after_decode(struct decode_loop * loop) {
    for (int32_t seq = 0; seq < loop->n_seq; seq++) {
        struct slot * slot = &loop->slots[seq];
        if (slot->batched == 0) continue;
        slot->n_past += slot->batched;
        if (slot->prompt_done < slot->n_prompt) slot->prompt_done += slot->batched;
        else slot->has_last = false;
        if (slot->logit_index < 0) continue;
        llama_token token = slot->argmax ? argmax(loop, slot->logit_index) : api.sample(slot->chain, loop->ctx, slot->logit_index);
        slot->generated++;
        if (api.vocab_is_eog(loop->vocab, token)) {
            slot->ended = END_EOG + 1;
            continue;
        }
        loop->events[loop->n_events++] = (struct event) { seq, EV_TOKEN, token, slot->n_past };
        if (slot->generated >= slot->limit) {
            slot->ended = END_LIMIT + 1;
        } else {
            slot->last = token;
            slot->has_last = true;
        }
    }
}

/* Outside the lock, after a failed decode: the batch's sequences' caches as they were before
 * it (llama_decode may keep part of a failed batch); they end with END_ERROR if `end`. */
static void after_failure(struct decode_loop * loop, bool end) {
    for (int32_t seq = 0; seq < loop->n_seq; seq++) {
        struct slot * slot = &loop->slots[seq];
        if (slot->batched == 0) continue;
        api.memory_seq_rm(loop->memory, seq, slot->n_past, -1);
        if (end) slot->ended = END_ERROR + 1;
    }
}

/* Outside the lock: decodes the planned batch and samples. When a batch of several sequences
 * fails, each is retried alone, so that one sequence's failure (its cache full, say) ends
 * that sequence only. */
static void step(struct decode_loop * loop) {
    build_batch(loop, -1);
    int32_t participants = 0;
    for (int32_t seq = 0; seq < loop->n_seq; seq++) participants += loop->slots[seq].batched > 0;
    if (api.decode(loop->ctx, loop->batch) == 0) {
        after_decode(loop);
    } else if (participants <= 1) {
        after_failure(loop, true);
    } else {
        after_failure(loop, false);
        for (int32_t seq = 0; seq < loop->n_seq; seq++) {
            if (!loop->slots[seq].decode_now && !loop->slots[seq].prefill_now) continue;
            build_batch(loop, seq);
            if (loop->batch.n_tokens == 0) continue;
            if (api.decode(loop->ctx, loop->batch) == 0) after_decode(loop);
            else after_failure(loop, true);
        }
    }
    loop->first_prefill = (loop->first_prefill + 1) % loop->n_seq;
}

static void * run(void * arg) {
    struct decode_loop * loop = arg;
    pthread_setname_np(pthread_self(), "parley-decode"); /* as top -H and /proc show it */
    pthread_mutex_lock(&loop->mu);
    while (!loop->quit) {
        bool work = plan_step(loop);
        /* Cancellations, now: a cancelled generation's END (its reader waits for it to reuse
         * the sequence) does not wait for the step the others are about to take. */
        post_events(loop);
        if (!work) {
            pthread_cond_wait(&loop->wake, &loop->mu);
            continue;
        }
        pthread_mutex_unlock(&loop->mu);
        step(loop);
        pthread_mutex_lock(&loop->mu);
        for (int32_t seq = 0; seq < loop->n_seq; seq++) {
            struct slot * slot = &loop->slots[seq];
            if (slot->ended != 0) end_slot(loop, seq, slot->ended - 1);
        }
        post_events(loop);
    }
    /* Halted with generations running (their context is being freed, or the loop closed):
     * they end with an error, and no new one is taken. After close() nobody listens. */
    loop->halted = 1;
    for (int32_t seq = 0; seq < loop->n_seq; seq++) {
        if (loop->slots[seq].state != SLOT_FREE) {
            if (loop->slots[seq].state == SLOT_STARTING) loop->slots[seq].n_past = 0;
            end_slot(loop, seq, END_ERROR);
        }
    }
    post_events(loop);
    pthread_mutex_unlock(&loop->mu);
    return NULL;
}

void decode_loop_halt(struct decode_loop * loop) {
    pthread_mutex_lock(&loop->join_mu);
    if (!loop->joined) {
        pthread_mutex_lock(&loop->mu);
        loop->quit = 1;
        pthread_cond_signal(&loop->wake);
        pthread_mutex_unlock(&loop->mu);
        pthread_join(loop->thread, NULL);
        loop->joined = 1;
    }
    pthread_mutex_unlock(&loop->join_mu);
}

/* ---- JavaScript ---- */

/* Delivers one step's events: onEvents(Int32Array of (seq, kind, value, n_past) quadruples). */
static void call_js(napi_env env, napi_value callback, void * context, void * data) {
    struct decode_loop * loop = context;
    struct event * message = data;
    if (env != NULL && callback != NULL) {
        size_t count = (size_t) message[0].seq;
        for (size_t i = 1; i <= count; i++) {
            /* Idle, the loop does not keep the process alive (the server's sockets do);
             * generating, it does, as any pending I/O would. */
            if (message[i].kind == EV_END && --loop->js_running == 0) napi_unref_threadsafe_function(env, loop->tsfn);
        }
        void * bytes;
        napi_value buffer, array, undefined;
        if (napi_create_arraybuffer(env, count * sizeof(struct event), &bytes, &buffer) == napi_ok) {
            memcpy(bytes, message + 1, count * sizeof(struct event));
            napi_create_typedarray(env, napi_int32_array, count * 4, buffer, 0, &array);
            napi_get_undefined(env, &undefined);
            napi_call_function(env, undefined, callback, 1, &array, NULL);
        }
    }
    free(message);
}

static void free_loop(struct decode_loop * loop) {
    for (int32_t seq = 0; loop->slots != NULL && seq < loop->n_seq; seq++) release_slot(&loop->slots[seq]);
    if (loop->batch.token != NULL) api.batch_free(loop->batch);
    free(loop->slots);
    free(loop->events);
    pthread_mutex_destroy(&loop->mu);
    pthread_cond_destroy(&loop->wake);
    pthread_mutex_destroy(&loop->join_mu);
    free(loop);
}

/* Stops the thread and lets go of JavaScript's callback; the memory stays until finalize. */
static void close_loop(struct decode_loop * loop) {
    if (loop->closed) return;
    loop->closed = 1;
    /* Halt, then unbind. Bound, the loop is halted by a llama_free of its context on another
     * thread (node-llama-cpp frees contexts on libuv's threadpool), which then waits for the
     * step in progress. Unbound first, that llama_free would find no loop and free the context
     * under the step. The hook halts under the registry lock, which unbinding takes: once
     * unbound, no hook can still be using the loop, whose memory lives until finalize. */
    decode_loop_halt(loop);
    context_unbind_loop(loop->ctx, loop);
    napi_release_threadsafe_function(loop->tsfn, napi_tsfn_abort);
}

static void cleanup_hook(void * data) {
    close_loop(data);
}

static void finalize_loop(napi_env env, void * data, void * hint) {
    (void) hint;
    struct decode_loop * loop = data;
    if (!loop->closed) {
        close_loop(loop);
        napi_remove_env_cleanup_hook(env, cleanup_hook, loop);
    }
    free_loop(loop);
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "decode loop: " #call " failed"); return NULL; } } while (0)
#define FAIL(message) do { napi_throw_error(env, NULL, message); return NULL; } while (0)

static struct decode_loop * loop_arg(napi_env env, napi_value value) {
    void * data = NULL;
    if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
        napi_throw_type_error(env, NULL, "decode loop: not a loop handle");
        return NULL;
    }
    struct decode_loop * loop = data;
    if (loop->closed) {
        napi_throw_error(env, NULL, "decode loop: closed");
        return NULL;
    }
    return loop;
}

/* Under the registry's lock (context_claim): sizes the loop for `ctx` and starts its thread. */
static int start_on_context(struct decode_loop * loop, struct llama_context * ctx) {
    loop->ctx = ctx;
    loop->vocab = api.model_get_vocab(api.get_model(ctx));
    loop->memory = api.get_memory(ctx);
    loop->n_vocab = api.vocab_n_tokens(loop->vocab);
    loop->n_batch = (int32_t) api.n_batch(ctx);
    loop->n_seq = (int32_t) api.n_seq_max(ctx);
    loop->slots = calloc((size_t) loop->n_seq, sizeof *loop->slots);
    loop->events = calloc((size_t) loop->n_seq * 2 + 1, sizeof *loop->events);
    if (loop->slots == NULL || loop->events == NULL || loop->n_batch < loop->n_seq || loop->n_seq < 1) return 0;
    loop->batch = api.batch_init(loop->n_batch, 0, 1);
    if (loop->batch.token == NULL) return 0;
    loop->joined = 0;
    if (pthread_create(&loop->thread, NULL, run, loop) != 0) {
        loop->joined = 1;
        return 0;
    }
    return 1;
}

/* loopOpen(contextSerial, maxAhead, onEvents) -> handle */
static napi_value loop_open(napi_env env, napi_callback_info info) {
    size_t argc = 3;
    napi_value argv[3];
    CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc < 3) FAIL("loopOpen(contextSerial, maxAhead, onEvents) needs three arguments");
    int64_t serial;
    int32_t max_ahead;
    CHECK(napi_get_value_int64(env, argv[0], &serial));
    CHECK(napi_get_value_int32(env, argv[1], &max_ahead));
    const char * missing = resolve_api();
    if (missing != NULL) {
        char message[160];
        snprintf(message, sizeof message, "decode loop: %s not found in any loaded library", missing);
        FAIL(message);
    }
    struct decode_loop * loop = calloc(1, sizeof *loop);
    if (loop == NULL) FAIL("decode loop: out of memory");
    loop->max_ahead = max_ahead < 1 ? 1 : max_ahead;
    pthread_mutex_init(&loop->mu, NULL);
    pthread_cond_init(&loop->wake, NULL);
    pthread_mutex_init(&loop->join_mu, NULL);
    loop->joined = 1; /* until the thread runs */
    loop->closed = 1;
    napi_value name;
    if (napi_create_string_utf8(env, "parley decode loop", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_threadsafe_function(env, argv[2], NULL, name, 0, 1, NULL, NULL, loop, call_js, &loop->tsfn) != napi_ok) {
        free_loop(loop);
        FAIL("decode loop: could not create its callback");
    }
    napi_unref_threadsafe_function(env, loop->tsfn); /* until a generation starts */
    if (!context_claim((long) serial, loop, start_on_context)) {
        napi_release_threadsafe_function(loop->tsfn, napi_tsfn_abort);
        free_loop(loop);
        FAIL("decode loop: no such llama.cpp context (freed, already looped, or created before the addon was configured), or out of memory");
    }
    loop->closed = 0;
    napi_add_env_cleanup_hook(env, cleanup_hook, loop);
    napi_value handle;
    CHECK(napi_create_external(env, loop, finalize_loop, NULL, &handle));
    return handle;
}

/* A finite number within [min, max]. */
static bool number_arg(napi_env env, napi_value value, double min, double max, double * out) {
    return napi_get_value_double(env, value, out) == napi_ok && isfinite(*out) && *out >= min && *out <= max;
}

/* loopStart(handle, seq, prompt: Int32Array, keep, limit,
 *           temperature, topK, topP, seed, presencePenalty, frequencyPenalty, penaltyLastN)
 * Sampling as node-llama-cpp's evaluate: penalties, then greedy at temperature 0, else top-k,
 * top-p, temperature and a seeded draw. seed: a uint32, where -1 (and, as in llama.cpp,
 * 4294967295) asks for a random one. */
static napi_value loop_start(napi_env env, napi_callback_info info) {
    size_t argc = 12;
    napi_value argv[12];
    CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc < 12) FAIL("loopStart needs twelve arguments");
    struct decode_loop * loop = loop_arg(env, argv[0]);
    if (loop == NULL) return NULL;
    /* The range each numeric argument must lie in (index 2, the prompt, is not a number). */
    static const double ranges[12][2] = {
        { 0, 0 }, { 0, 65535 }, { 0, 0 }, { 0, 2147483647 }, { 1, 2147483647 },
        { 0, 1e6 }, { 0, 2147483647 }, { 0, 1 }, { -1, 4294967295.0 }, { -1e6, 1e6 }, { -1e6, 1e6 }, { 0, 65536 },
    };
    double n[12] = { 0 };
    for (int i = 1; i < 12; i++) {
        if (i == 2) continue;
        if (!number_arg(env, argv[i], ranges[i][0], ranges[i][1], &n[i])) {
            char message[96];
            snprintf(message, sizeof message, "loopStart: argument %d must be a number in [%g, %g]", i, ranges[i][0], ranges[i][1]);
            FAIL(message);
        }
    }
    int32_t seq = (int32_t) n[1];
    if (seq < 0 || seq >= loop->n_seq) FAIL("loopStart: no such sequence");
    napi_typedarray_type type;
    size_t length;
    void * data;
    CHECK(napi_get_typedarray_info(env, argv[2], &type, &length, &data, NULL, NULL));
    if (type != napi_int32_array && type != napi_uint32_array) FAIL("loopStart: tokens must be an Int32Array");
    if (length == 0 || length > 2147483647u) FAIL("loopStart: the prompt must hold at least one token");
    if (n[3] >= (double) length) FAIL("loopStart: keep must be below the prompt's length");
    const llama_token * tokens = data;
    for (size_t i = 0; i < length; i++) {
        if (tokens[i] < 0 || tokens[i] >= loop->n_vocab) FAIL("loopStart: a token is outside the vocabulary");
    }
    llama_token * prompt = malloc(length * sizeof *prompt);
    if (prompt == NULL) FAIL("decode loop: out of memory");
    memcpy(prompt, tokens, length * sizeof *prompt);

    float temperature = (float) n[5], top_p = (float) n[7], presence = (float) n[9], frequency = (float) n[10];
    int32_t top_k = (int32_t) n[6], last_n = (int32_t) n[11];
    struct llama_sampler * chain = api.chain_init(api.chain_default_params());
    if (presence != 0.0f || frequency != 0.0f) {
        api.chain_add(chain, api.init_penalties(loop->n_vocab, last_n, 1.0f, frequency, presence));
    }
    if (temperature <= 0.0f) {
        api.chain_add(chain, api.init_greedy());
    } else {
        if (top_k > 0) api.chain_add(chain, api.init_top_k(top_k < loop->n_vocab ? top_k : loop->n_vocab));
        if (top_p >= 0.0f && top_p < 1.0f) api.chain_add(chain, api.init_top_p(top_p, 1));
        api.chain_add(chain, api.init_temp(temperature));
        api.chain_add(chain, api.init_dist(n[8] < 0 ? LLAMA_DEFAULT_SEED : (uint32_t) n[8]));
    }

    pthread_mutex_lock(&loop->mu);
    struct slot * slot = &loop->slots[seq];
    if (slot->state != SLOT_FREE || loop->halted) {
        int halted = loop->halted;
        pthread_mutex_unlock(&loop->mu);
        api.sampler_free(chain);
        free(prompt);
        FAIL(halted ? "decode loop: halted (its context was freed)" : "loopStart: the sequence is still generating");
    }
    slot->prompt = prompt;
    slot->n_prompt = (int32_t) length;
    slot->keep = (llama_pos) n[3];
    slot->limit = (int32_t) n[4] < 1 ? 1 : (int32_t) n[4];
    slot->chain = chain;
    slot->argmax = temperature <= 0.0f && presence == 0.0f && frequency == 0.0f;
    slot->cancel = 0;
    slot->acked = 0;
    slot->state = SLOT_STARTING;
    pthread_cond_signal(&loop->wake);
    pthread_mutex_unlock(&loop->mu);
    if (loop->js_running++ == 0) napi_ref_threadsafe_function(env, loop->tsfn);
    return NULL;
}

/* loopAck(handle, seq, count) and loopCancel(handle, seq) */
static napi_value loop_signal(napi_env env, napi_callback_info info, bool cancel) {
    size_t argc = 3;
    napi_value argv[3];
    CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc < (cancel ? 2u : 3u)) FAIL("decode loop: missing arguments");
    struct decode_loop * loop = loop_arg(env, argv[0]);
    if (loop == NULL) return NULL;
    int32_t seq, count = 0;
    CHECK(napi_get_value_int32(env, argv[1], &seq));
    if (!cancel) CHECK(napi_get_value_int32(env, argv[2], &count));
    if (seq < 0 || seq >= loop->n_seq) FAIL("decode loop: no such sequence");
    pthread_mutex_lock(&loop->mu);
    struct slot * slot = &loop->slots[seq];
    if (slot->state != SLOT_FREE) {
        if (cancel) slot->cancel = 1;
        else slot->acked += count;
        pthread_cond_signal(&loop->wake);
    }
    pthread_mutex_unlock(&loop->mu);
    return NULL;
}

static napi_value loop_ack(napi_env env, napi_callback_info info) {
    return loop_signal(env, info, false);
}

static napi_value loop_cancel(napi_env env, napi_callback_info info) {
    return loop_signal(env, info, true);
}

/* loopClose(handle): stops the thread (waiting for a step in progress). */
static napi_value loop_close(napi_env env, napi_callback_info info) {
    size_t argc = 1;
    napi_value argv[1];
    CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc < 1) FAIL("loopClose(handle) needs a handle");
    void * data = NULL;
    CHECK(napi_get_value_external(env, argv[0], &data));
    struct decode_loop * loop = data;
    if (loop != NULL && !loop->closed) {
        close_loop(loop);
        napi_remove_env_cleanup_hook(env, cleanup_hook, loop);
    }
    return NULL;
}

/* contextSerial(): the newest llama.cpp context's number (0 before any). */
static napi_value get_context_serial(napi_env env, napi_callback_info info) {
    (void) info;
    napi_value value;
    CHECK(napi_create_int64(env, context_serial(), &value));
    return value;
}

/* liveContexts(): the numbers of the llama.cpp contexts alive now, newest first. */
static napi_value get_live_contexts(napi_env env, napi_callback_info info) {
    (void) info;
    long serials[256];
    size_t count = live_context_serials(serials, 256);
    if (count > 256) count = 256;
    napi_value array, value;
    CHECK(napi_create_array_with_length(env, count, &array));
    for (size_t i = 0; i < count; i++) {
        CHECK(napi_create_int64(env, serials[i], &value));
        CHECK(napi_set_element(env, array, (uint32_t) i, value));
    }
    return array;
}

napi_status decode_loop_define(napi_env env, napi_value exports) {
    napi_property_descriptor properties[] = {
        { "contextSerial", NULL, get_context_serial, NULL, NULL, NULL, napi_default, NULL },
        { "liveContexts", NULL, get_live_contexts, NULL, NULL, NULL, napi_default, NULL },
        { "loopOpen", NULL, loop_open, NULL, NULL, NULL, napi_default, NULL },
        { "loopStart", NULL, loop_start, NULL, NULL, NULL, napi_default, NULL },
        { "loopAck", NULL, loop_ack, NULL, NULL, NULL, napi_default, NULL },
        { "loopCancel", NULL, loop_cancel, NULL, NULL, NULL, napi_default, NULL },
        { "loopClose", NULL, loop_close, NULL, NULL, NULL, napi_default, NULL },
    };
    return napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
}
