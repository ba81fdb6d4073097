"""Mean pooling (model.pooling=mean): the classifier sees the mean of the real tokens' states."""
import pytest
import torch

from experiments.run.models import use_mean_pooling
from conftest import make_bert, make_llama


def test_mean_pooling_feeds_the_classifier_the_masked_mean_of_the_token_states():
    model = make_bert()
    use_mean_pooling(model)
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        states = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.classifier(torch.stack([states[0].mean(0), states[1, :3].mean(0)]))
        alone = model(input_ids=ids[1:, :3], attention_mask=mask[1:, :3]).logits
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(logits[1:], alone)  # padding changes nothing
    assert not any("pooler" in name for name, _ in model.named_parameters())


def test_mean_pooling_on_a_decoder_says_what_to_use_instead():
    with pytest.raises(ValueError, match="model.pooling=model"):
        use_mean_pooling(make_llama())


def test_mean_pooling_refuses_a_model_whose_head_ignores_the_pooler():
    from transformers import RobertaConfig, RobertaForSequenceClassification
    config = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64)
    with pytest.raises(ValueError, match="RobertaForSequenceClassification has none"):
        use_mean_pooling(RobertaForSequenceClassification(config))
