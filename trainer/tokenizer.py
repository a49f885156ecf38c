"""Character-level tokenizer for the preset models, built locally with `tokenizers` (nothing to download).

One token per printable ASCII character (plus tab and newline), so the tasks' answers are short token
sequences and per-token entropy is easy to read. Special tokens come first: <pad>=0, <eos>=1, <bos>=2,
<unk>=3. Nothing is added automatically on encode; `trainer.warmup.encode_prompt` prepends <bos> itself.
"""

import string

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
# string.printable minus \r, \x0b, \x0c: those never occur in task text and would not survive editors.
CHARS = tuple(c for c in string.printable if c not in "\r\x0b\x0c")


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A left-padding character tokenizer whose decode(encode(s)) == s for printable ASCII text."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    # BPE without merges splits a word into its characters; with no pre-tokenizer the whole text is one
    # "word", so spaces and newlines are ordinary tokens and nothing is normalised away.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()  # concatenate tokens as they are (no spaces inserted between them)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="left",  # batched generation appends tokens on the right
        clean_up_tokenization_spaces=False,  # would rewrite " ," into "," and break round trips
    )
