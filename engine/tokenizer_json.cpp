// Hugging Face tokenizer.json -> GGUF-style vocabulary arrays (see tokenizer_json.h).
// Only the BPE model is accepted; added_tokens override/extend model.vocab by id.
#include "engine/tokenizer_json.h"

#include "engine/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_set>

namespace prefixd {
namespace {

using nlohmann::json;

json read_json(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw TokenizerError("tokenizer.json: cannot open " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        return json::parse(ss.str());
    } catch (const json::exception& e) {
        throw TokenizerError("tokenizer.json: " + path + ": invalid JSON: " + e.what());
    }
}

// bos_token/eos_token in tokenizer_config.json are a string or {"content": ...}.
std::string config_token(const json& cfg, const char* key) {
    if (!cfg.contains(key))
        return {};
    const json& v = cfg[key];
    if (v.is_string())
        return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string())
        return v["content"].get<std::string>();
    return {};
}

int32_t find_id(const std::vector<std::string>& tokens, const std::string& s) {
    if (s.empty())
        return -1;
    for (size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] == s)
            return static_cast<int32_t>(i);
    return -1;
}

void set_token(HfVocab& v, std::vector<bool>& present, int64_t id, const std::string& s, int32_t type,
               const std::string& path) {
    if (id < 0 || id > (int64_t{1} << 24))
        throw TokenizerError("tokenizer.json: " + path + ": bad token id " + std::to_string(id) + " for '" +
                             s + "'");
    size_t i = static_cast<size_t>(id);
    if (i >= v.tokens.size()) {
        v.tokens.resize(i + 1);
        v.token_types.resize(i + 1, 0);
        present.resize(i + 1, false);
    }
    v.tokens[i] = s;
    v.token_types[i] = type;
    present[i] = true;
}

} // namespace

HfVocab load_hf_tokenizer_json(const std::string& path, int32_t pad_to) {
    json j = read_json(path);
    HfVocab v;
    std::vector<bool> present;
    try {
        const json& model = j.at("model");
        if (model.contains("type") && model["type"].is_string() && model["type"].get<std::string>() != "BPE")
            throw TokenizerError("tokenizer.json: " + path + ": model type '" +
                                 model["type"].get<std::string>() + "' is not BPE");
        for (const auto& [tok, id] : model.at("vocab").items())
            set_token(v, present, id.get<int64_t>(), tok, 1, path);
        for (const json& m : model.at("merges")) {
            if (m.is_string()) {
                v.merges.push_back(m.get<std::string>());
            } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
                v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
            } else {
                throw TokenizerError("tokenizer.json: " + path +
                                     ": merge entry is neither \"a b\" nor [a, b]");
            }
        }
        if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
            for (const json& a : j["added_tokens"]) {
                bool special = a.value("special", false);
                set_token(v, present, a.at("id").get<int64_t>(), a.at("content").get<std::string>(),
                          special ? 3 : 4, path);
            }
        }
    } catch (const json::exception& e) {
        throw TokenizerError("tokenizer.json: " + path + ": unexpected structure: " + e.what());
    }
    if (v.tokens.empty())
        throw TokenizerError("tokenizer.json: " + path + ": empty vocabulary");

    // Fill holes and pad to pad_to with unique placeholders.
    if (pad_to > 0 && static_cast<size_t>(pad_to) > v.tokens.size()) {
        v.tokens.resize(static_cast<size_t>(pad_to));
        v.token_types.resize(static_cast<size_t>(pad_to), 0);
        present.resize(static_cast<size_t>(pad_to), false);
    }
    std::unordered_set<std::string> used;
    for (size_t i = 0; i < v.tokens.size(); ++i)
        if (present[i])
            used.insert(v.tokens[i]);
    for (size_t i = 0; i < v.tokens.size(); ++i) {
        if (present[i])
            continue;
        std::string s = "[PAD" + std::to_string(i) + "]";
        while (used.count(s))
            s += "_";
        used.insert(s);
        v.tokens[i] = s;
        v.token_types[i] = 5;
    }

    // BOS/EOS: tokenizer_config.json beside the file, else DeepSeek's names.
    std::string bos_s, eos_s;
    auto cfg_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(cfg_path)) {
        json cfg = read_json(cfg_path.string());
        bos_s = config_token(cfg, "bos_token");
        eos_s = config_token(cfg, "eos_token");
    }
    if (bos_s.empty())
        bos_s = "<｜begin▁of▁sentence｜>";
    if (eos_s.empty())
        eos_s = "<｜end▁of▁sentence｜>";
    v.bos = find_id(v.tokens, bos_s);
    v.eos = find_id(v.tokens, eos_s);
    return v;
}

} // namespace prefixd
