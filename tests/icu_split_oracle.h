// Test oracle for pre-tokenizers: HF "Split" rules with behavior Isolated evaluated by ICU's regex
// engine, independent of the hand-written matchers in engine/pretokenizer.cpp. Shared by
// test_tokenizer.cpp (DeepSeek-V3 rules from tokenizer.json) and test_tokenizer_pre.cpp.
#pragma once

#include <doctest/doctest.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

// HF Split with behavior Isolated, each rule applied to every piece the previous one produced: the
// matches of a piece and the text between them become pieces; the regex never sees past its piece.
class IcuSplitOracle {
  public:
    explicit IcuSplitOracle(const std::vector<std::string>& rules) {
        for (const std::string& re : rules) {
            UErrorCode st = U_ZERO_ERROR;
            UParseError pe;
            patterns_.emplace_back(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(re), pe, st));
            REQUIRE_MESSAGE(U_SUCCESS(st), "ICU cannot compile " << re << ": " << u_errorName(st));
        }
    }
    std::vector<std::string> split(const std::string& text) const {
        icu::UnicodeString u = icu::UnicodeString::fromUTF8(text);
        std::vector<std::pair<int32_t, int32_t>> cur, next;
        if (u.length() > 0)
            cur.push_back({0, u.length()});
        for (const auto& p : patterns_) {
            UErrorCode st = U_ZERO_ERROR;
            std::unique_ptr<icu::RegexMatcher> m(p->matcher(u, st));
            REQUIRE(U_SUCCESS(st));
            next.clear();
            for (auto [b, e] : cur) {
                m->region(b, e, st); // opaque, anchoring bounds: ^ $ and lookaround stop at the piece
                int32_t prev = b;
                while (m->find(st)) {
                    int32_t s = m->start(st), t = m->end(st);
                    if (s > prev)
                        next.push_back({prev, s});
                    if (t > s)
                        next.push_back({s, t});
                    prev = t;
                }
                if (prev < e)
                    next.push_back({prev, e});
            }
            REQUIRE(U_SUCCESS(st));
            cur.swap(next);
        }
        std::vector<std::string> out;
        for (auto [b, e] : cur) {
            std::string piece;
            u.tempSubStringBetween(b, e).toUTF8String(piece);
            out.push_back(piece);
        }
        return out;
    }

  private:
    std::vector<std::unique_ptr<icu::RegexPattern>> patterns_;
};
