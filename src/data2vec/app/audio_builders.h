// The audio modality's part of the builders: encoder options, the speech corpora, the evaluation
// tasks and `embed`'s file reader, from the configuration. Called by builders.cpp only.
//
// Corpora under data.root (scripts/fetch-data.sh speech and spoken-digits put them there), named
// in data.dataset as a comma-separated list; a name ending in .tsv is a manifest file instead
// (`data2vec manifest DIR --out FILE` makes one):
//   asterisk       the Asterisk prompts, en es fr it ru (one speaker each), minus the English
//                  digit recordings and the language task's held-out clips
//   klettres       klettres' letters and syllables, 20 languages, minus the language task's
//                  held-out clips
//   spoken-digits  the synthetic training voices of the spoken-digits task
// Evaluation tasks (eval.tasks):
//   digits    spoken digits: trained on synthetic voices, tested on held-out espeak-ng voice
//             variants, on other synthesisers' voices and on the recorded Asterisk digits
//             (three rows)
//   language  language ID on held-out clips of the speakers it was trained on (Asterisk and
//             klettres, en es fr it ru): speaker-and-language identity
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data2vec/app/builders.h"
#include "data2vec/audio/encoder.h"

namespace data2vec::app {

audio::AudioEncoderOptions audio_encoder_options(const io::Config& config);

std::shared_ptr<const Dataset> audio_pretrain_dataset(const io::Config& config);

std::vector<EvalTask> audio_eval_tasks(const io::Config& config);

FilesDataset audio_files_dataset(const io::Config& config, const std::string& input);

}  // namespace data2vec::app
