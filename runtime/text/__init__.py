"""Text, the head of the data flow: a character's turn cut into the sentences the face acts out."""

from runtime.text.sentences import MAX_SENTENCE, SentenceBuffer, split_sentences

__all__ = ["MAX_SENTENCE", "SentenceBuffer", "split_sentences"]
