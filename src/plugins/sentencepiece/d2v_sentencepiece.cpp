// libd2v_sentencepiece.so: SentencePiece behind the plain C API of d2v_sentencepiece.h.
// Exceptions never cross the C boundary: every entry point catches and reports through `err`.
#include "d2v_sentencepiece.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

#define D2V_SPM_EXPORT __attribute__((visibility("default")))

struct d2v_spm_model {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

void set_error(char* err, size_t err_len, const std::string& message) {
  if (err == nullptr || err_len == 0) return;
  const size_t n = std::min(err_len - 1, message.size());
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

}  // namespace

extern "C" {

D2V_SPM_EXPORT int d2v_spm_api_version(void) {
  return D2V_SPM_API_VERSION;
}

D2V_SPM_EXPORT int d2v_spm_train(const char* const* keys, const char* const* values, size_t n,
                                 char* err, size_t err_len) {
  try {
    std::unordered_map<std::string, std::string> kwargs;
    for (size_t i = 0; i < n; ++i) kwargs[keys[i]] = values[i];
    const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs);
    if (!status.ok()) {
      set_error(err, err_len, "sentencepiece training failed: " + status.ToString());
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("sentencepiece training failed: ") + e.what());
    return 1;
  }
}

D2V_SPM_EXPORT d2v_spm_model* d2v_spm_load(const char* model_file, char* err, size_t err_len) {
  try {
    auto model = new d2v_spm_model();
    const auto status = model->processor.Load(model_file);
    if (!status.ok()) {
      delete model;
      set_error(
          err, err_len,
          std::string("cannot load sentencepiece model ") + model_file + ": " + status.ToString());
      return nullptr;
    }
    return model;
  } catch (const std::exception& e) {
    set_error(err, err_len,
              std::string("cannot load sentencepiece model ") + model_file + ": " + e.what());
    return nullptr;
  }
}

D2V_SPM_EXPORT void d2v_spm_free(d2v_spm_model* model) {
  delete model;
}

D2V_SPM_EXPORT int d2v_spm_encode(const d2v_spm_model* model, const char* text, size_t len,
                                  int32_t** ids, size_t* n, char* err, size_t err_len) {
  try {
    std::vector<int> pieces;
    const auto status = model->processor.Encode(std::string(text, len), &pieces);
    if (!status.ok()) {
      set_error(err, err_len, "sentencepiece encode failed: " + status.ToString());
      return 1;
    }
    *n = pieces.size();
    *ids = new int32_t[pieces.size() + 1];
    for (size_t i = 0; i < pieces.size(); ++i) (*ids)[i] = pieces[i];
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("sentencepiece encode failed: ") + e.what());
    return 1;
  }
}

D2V_SPM_EXPORT void d2v_spm_free_ids(int32_t* ids) {
  delete[] ids;
}

D2V_SPM_EXPORT int64_t d2v_spm_decode(const d2v_spm_model* model, const int32_t* ids, size_t n,
                                      char* out, size_t out_len, char* err, size_t err_len) {
  try {
    std::string text;
    const auto status = model->processor.Decode(std::vector<int>(ids, ids + n), &text);
    if (!status.ok()) {
      set_error(err, err_len, "sentencepiece decode failed: " + status.ToString());
      return -1;
    }
    if (out != nullptr && out_len > 0) {
      const size_t copied = std::min(out_len - 1, text.size());
      std::memcpy(out, text.data(), copied);
      out[copied] = '\0';
    }
    return static_cast<int64_t>(text.size());
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("sentencepiece decode failed: ") + e.what());
    return -1;
  }
}

D2V_SPM_EXPORT int32_t d2v_spm_vocab_size(const d2v_spm_model* model) {
  return model->processor.GetPieceSize();
}

D2V_SPM_EXPORT const char* d2v_spm_id_to_piece(const d2v_spm_model* model, int32_t id) {
  if (id < 0 || id >= model->processor.GetPieceSize()) return "";
  return model->processor.IdToPiece(id).c_str();
}

D2V_SPM_EXPORT int32_t d2v_spm_piece_to_id(const d2v_spm_model* model, const char* piece) {
  return model->processor.PieceToId(piece);
}

D2V_SPM_EXPORT int32_t d2v_spm_bos_id(const d2v_spm_model* model) {
  return model->processor.bos_id();
}
D2V_SPM_EXPORT int32_t d2v_spm_eos_id(const d2v_spm_model* model) {
  return model->processor.eos_id();
}
D2V_SPM_EXPORT int32_t d2v_spm_pad_id(const d2v_spm_model* model) {
  return model->processor.pad_id();
}
D2V_SPM_EXPORT int32_t d2v_spm_unk_id(const d2v_spm_model* model) {
  return model->processor.unk_id();
}

}  // extern "C"
