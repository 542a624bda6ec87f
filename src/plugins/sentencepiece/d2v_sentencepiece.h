/* The C interface of libd2v_sentencepiece.so, a thin wrapper around SentencePiece.
 *
 * Why a plugin: Debian's libsentencepiece bundles its own protobuf-lite and exports its symbols;
 * libtorch loads the system protobuf. Linking both into one process crashes before main
 * (checked here: the two protobuf versions clash). data2vec therefore never links
 * sentencepiece: it dlopen()s this library with
 * RTLD_LOCAL | RTLD_DEEPBIND (src/data2vec/text/tokenizer.cpp), and only plain C types cross the
 * boundary.
 *
 * Conventions: functions returning int return 0 on success and nonzero on failure, with a
 * NUL-terminated message in `err` (capacity `err_len`). Arrays returned by the plugin are freed
 * with d2v_spm_free_ids.
 */
#ifndef D2V_SENTENCEPIECE_H_
#define D2V_SENTENCEPIECE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature below changes; the loader refuses other versions. */
#define D2V_SPM_API_VERSION 1

typedef struct d2v_spm_model d2v_spm_model;

int d2v_spm_api_version(void);

/* Trains a model with SentencePiece's trainer flags given as `n` key/value pairs (the names of
 * spm_train's flags without "--", e.g. {"input", "a.txt,b.txt"}, {"vocab_size", "8000"}). */
int d2v_spm_train(const char* const* keys, const char* const* values, size_t n, char* err,
                  size_t err_len);

/* Loads `model_file` (a .model written by training); NULL on failure. */
d2v_spm_model* d2v_spm_load(const char* model_file, char* err, size_t err_len);
void d2v_spm_free(d2v_spm_model* model);

/* Encodes `len` bytes of UTF-8 text into piece ids; *ids (allocated by the plugin, free with
 * d2v_spm_free_ids) receives *n ids. */
int d2v_spm_encode(const d2v_spm_model* model, const char* text, size_t len, int32_t** ids,
                   size_t* n, char* err, size_t err_len);
void d2v_spm_free_ids(int32_t* ids);

/* Decodes ids to text into `out` (capacity `out_len`, NUL-terminated); returns the text's length
 * in bytes, or -1 on failure. A return value >= out_len means `out` was too small: call again. */
int64_t d2v_spm_decode(const d2v_spm_model* model, const int32_t* ids, size_t n, char* out,
                       size_t out_len, char* err, size_t err_len);

int32_t d2v_spm_vocab_size(const d2v_spm_model* model);
/* The piece of `id` (owned by the model, valid while it lives); "" when out of range. */
const char* d2v_spm_id_to_piece(const d2v_spm_model* model, int32_t id);
/* The id of `piece`; the unknown id when there is no such piece. */
int32_t d2v_spm_piece_to_id(const d2v_spm_model* model, const char* piece);
/* The model's special ids (-1 when disabled). */
int32_t d2v_spm_bos_id(const d2v_spm_model* model);
int32_t d2v_spm_eos_id(const d2v_spm_model* model);
int32_t d2v_spm_pad_id(const d2v_spm_model* model);
int32_t d2v_spm_unk_id(const d2v_spm_model* model);

#ifdef __cplusplus
}
#endif

#endif /* D2V_SENTENCEPIECE_H_ */
