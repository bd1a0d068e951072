/*
 * What llama-tuning.c (the hooks) and decode-loop.c (Parley's decode loop) share inside the one
 * addon, build/native/llama-tuning.node.
 */
#ifndef PARLEY_LLAMA_NATIVE_H
#define PARLEY_LLAMA_NATIVE_H

#include <node_api.h>

#include "llama.h"

/* The first definition of `name` among the loaded objects that is not a copy of this addon,
 * or NULL. The addon is not linked against libllama (node-llama-cpp loads that privately), so
 * every llama.cpp function it calls is found this way. */
void * find_real(const char * name);

struct decode_loop;

/* Each context llama_init_from_model returns is numbered, in order, from 1. */
/* The newest context's number (0 before any). */
long context_serial(void);
/* The numbers of the live contexts, newest first, into `out` (up to `capacity`); how many there are. */
size_t live_context_serials(long * out, size_t capacity);

/* Calls start(loop, ctx) for the live context numbered `serial` that has no loop yet, and binds
 * the loop to it when start returns nonzero (llama_free(ctx) then halts the loop first). All
 * under the registry's lock, so the context cannot be freed meanwhile; start must not take
 * that lock (nor may the loop's thread, ever). 0 when no such context, or start failed. */
int context_claim(long serial, struct decode_loop * loop, int (*start)(struct decode_loop *, struct llama_context *));
void context_unbind_loop(struct llama_context * ctx, struct decode_loop * loop);

/* Stops the loop's thread and waits for it; any thread, any number of times. */
void decode_loop_halt(struct decode_loop * loop);

/* Adds the decode loop's functions to the addon's exports. */
napi_status decode_loop_define(napi_env env, napi_value exports);

#endif
